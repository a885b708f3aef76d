#!/usr/bin/env python
"""Summarise an activation store; with --verify, read it back and name every damaged shard."""

from __future__ import annotations

import click

from interplm_jax.cli import command, parse_layers
from interplm_jax.errors import StoreError


@click.command(context_settings={"show_default": True})
@click.argument("store")
@click.option("--verify", is_flag=True,
              help="Read every written shard back and compare it with the checksums its writer "
                   "recorded; exit status 2 naming each damaged layer and shard.")
@click.option("--layers", default=None, help="With --verify: only these layers, e.g. 1,3 (default: all).")
@command
def main(store, verify, layers):
    """Print what STORE (a directory or gs:// URL) holds: model, layers, proteins, tokens, shards
    written, checksums. --verify also finds flipped bytes, truncated or deleted chunks and
    non-finite values, shard by shard."""
    from interplm_jax.store import ActivationStore
    from interplm_jax.store.verify import verify_store

    st = ActivationStore.open(store, allow_incomplete=True)
    click.echo(st.summary())
    if not verify:
        return
    chosen = parse_layers(layers) if layers else st.layers
    missing = [L for L in chosen if L not in st.layers]
    if missing:
        raise StoreError(f"{store}: layer(s) {missing} not in the store (layers {list(st.layers)})")
    damage = verify_store(st, tuple(chosen))
    if damage:
        raise StoreError(f"{store}: {len(damage)} damaged layer shard(s):\n  "
                         + "\n  ".join(map(str, damage))
                         + "\nDelete the store and extract it again (or restore it from a copy).")
    click.echo(f"verified: every written shard of layer(s) {list(chosen)} reads back as written")


if __name__ == "__main__":
    main()
