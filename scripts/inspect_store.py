#!/usr/bin/env python
"""Summarise an activation store; with --verify, read it back and name every damaged shard."""

from __future__ import annotations

import click

from interplm_jax.cli import command, parse_layers
from interplm_jax.errors import InputError, StoreError


@click.command(context_settings={"show_default": True})
@click.argument("store")
@click.option("--verify", is_flag=True,
              help="Read every written shard back and compare it with the checksums its writer "
                   "recorded; exit status 2 naming each damaged layer and shard.")
@click.option("--layers", default=None, help="With --verify: only these layers, e.g. 1,3 (default: all).")
@click.option("--forget-damaged", is_flag=True,
              help="With --verify: make the damaged shards pending again (store marked incomplete, "
                   "their markers and chunks removed), so that rerunning the extraction with the "
                   "same options rewrites only them.")
@click.option("--compute-stats", is_flag=True,
              help="Compute the activation statistics of a complete store written before they "
                   "existed (one pass over its rows) and write them into it.")
@command
def main(store, verify, layers, forget_damaged, compute_stats):
    """Print what STORE (a directory or gs:// URL) holds: model, layers, proteins, tokens, shards
    written, checksums, and each layer's activation statistics (token norms, ||mean|| / mean
    norm, outlier dimensions). --verify also finds flipped bytes, truncated or deleted chunks and
    non-finite values, shard by shard."""
    from interplm_jax.store import ActivationStore
    from interplm_jax.store import stats as store_stats
    from interplm_jax.store.verify import forget_shards, verify_store

    if forget_damaged and not verify:
        raise InputError("--forget-damaged needs --verify")
    st = ActivationStore.open(store, allow_incomplete=True)
    click.echo(st.summary())
    if compute_stats:
        if not st.manifest.get("complete"):
            raise StoreError(f"{store}: incomplete store; finish the extraction first")
        store_stats.compute_stats(st)
    for layer in st.layers:
        s = store_stats.load_stats(st, layer)
        click.echo(s.describe() if s else f"layer {layer}: no activation statistics (a store "
                   "written before they existed, or not complete): --compute-stats makes them")
    if not verify:
        return
    chosen = parse_layers(layers) if layers else st.layers
    missing = [L for L in chosen if L not in st.layers]
    if missing:
        raise StoreError(f"{store}: layer(s) {missing} not in the store (layers {list(st.layers)})")
    damage = verify_store(st, tuple(chosen))
    shards = {d.shard for d in damage if d.repairable}
    if shards and forget_damaged:
        forget_shards(st, shards)
        click.echo(f"{len(damage)} damaged layer shard(s):\n  " + "\n  ".join(map(str, damage))
                   + f"\nforgot shard(s) {sorted(shards)}: rerun the extraction with the same "
                   "options to rewrite them")
        return
    if damage:
        raise StoreError(f"{store}: {len(damage)} damaged layer shard(s):\n  "
                         + "\n  ".join(map(str, damage))
                         + "\nRepair: --forget-damaged, then rerun the extraction with the same options.")
    click.echo(f"verified: every written shard of layer(s) {list(chosen)} reads back as written")


if __name__ == "__main__":
    main()
