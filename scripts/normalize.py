#!/usr/bin/env python
"""Normalize SAE features by their maximum over a store; or build the neuron baseline."""

from __future__ import annotations

import io

import click
import numpy as np

from interplm_jax.cli import command
from interplm_jax.config import config_options
from interplm_jax.errors import InputError
from interplm_jax.normalize import NormalizeConfig
from interplm_jax.paths import as_path, write_atomic


@click.command(context_settings={"show_default": True})
@click.option("--sae", "sae_dir", type=click.Path(file_okay=False), default=None,
              help="SAE directory (local or gs://): ours (sae.json) or InterPLM's (ae.pt + config.yaml, local).")
@click.option("--sweep", type=click.Path(file_okay=False), default=None,
              help="Normalize every SAE of a sweep (local or gs://) in one pass over the store; writes <sweep>/saes/<id>/.")
@click.option("--store", required=True, help="Activation store of the normalization proteins.")
@click.option("--layer", type=int, default=None, help="Store layer (default: the SAE's own).")
@click.option("--neurons", is_flag=True,
              help="Build the neuron baseline (identity SAE, min-max scaled) into --sae instead.")
@command
@config_options(NormalizeConfig, "normalize")
def main(sae_dir, sweep, store, layer, neurons, cfg):
    """Per-feature maximum activation over the store's proteins -> scale = 1/max (0 for
    features that never fire, reported), written into the SAE with feature_stats/ beside it.
    An InterPLM directory gets ae_normalized.pt (activation_rescale_factor = max), as the
    reference writes it."""
    from interplm_jax import normalize as nz
    from interplm_jax.sae_dir import META_FILE, load_sae, save_sae
    from interplm_jax.store import ActivationStore

    if (sae_dir is None) == (sweep is None):
        raise InputError("give one of --sae or --sweep")
    act = ActivationStore.open(store)
    proteins = nz.sample_proteins(act, cfg.max_proteins, cfg.seed)
    chunk_tokens = cfg.chunk_tokens
    if neurons:
        if sweep or layer is None:
            raise InputError("--neurons needs --sae (output directory) and --layer")
        sae, bounds = nz.neuron_baseline(act, layer, chunk_tokens, proteins)
        save_sae(sae_dir, sae)
        for name, arr in bounds.items():  # feature_stats/min.npy, max.npy: per-neuron bounds
            buf = io.BytesIO()
            np.save(buf, arr)
            write_atomic(as_path(sae_dir) / nz.STATS_DIR / f"{name}.npy", buf.getvalue())
        click.echo(f"neuron baseline of layer {layer} ({act.d_model} neurons) written to {sae_dir}")
        return
    if sweep:
        _normalize_sweep(sweep, act, layer, chunk_tokens, proteins)
        return
    sae_dir = as_path(sae_dir)
    interplm = not (sae_dir / META_FILE).is_file() and (sae_dir / "ae.pt").is_file()
    if interplm:
        from torch_bridge.export import read_interplm

        sae = read_interplm(sae_dir / "ae.pt")
    else:
        sae = load_sae(sae_dir)
    normalized, stats = nz.normalize(sae, act, layer, chunk_tokens, proteins)
    nz.write_feature_stats(sae_dir, stats, {"store": str(store)})
    if interplm:
        from torch_bridge.export import write_interplm

        write_interplm(normalized, sae_dir, name="ae_normalized.pt")
    else:
        save_sae(sae_dir, normalized)
    click.echo(f"{sae_dir}: normalized on {stats.n_proteins} proteins ({stats.n_tokens} tokens); "
               f"{len(stats.dead)} of {len(stats.max)} features never fired (scale 0)")


def _normalize_sweep(sweep, store, layer, chunk_tokens, proteins):
    import dataclasses

    from interplm_jax import normalize as nz
    from interplm_jax.sae_dir import check_params, save_sae
    from interplm_jax.sweep_saes import read_sweep

    saes = read_sweep(sweep)
    first = next(iter(saes.values()))
    layer = nz._layer_of(first, store, layer)
    stacked = {k: np.stack([s.params[k] for s in saes.values()]) for k in first.params}
    n_tok = store.n_tokens if proteins is None else int(store.lengths()[proteins].sum())
    stats = nz.feature_stats(first.arch, stacked, nz.row_chunks(store, layer, chunk_tokens, proteins),
                             n_tok, stacked=True)
    n_prot = store.n_proteins if proteins is None else len(proteins)
    for g, (sae_id, sae) in enumerate(saes.items()):
        one = nz.FeatureStats(stats.max[g], stats.n_active[g], stats.n_tokens, n_prot)
        params = check_params(sae.arch, {**sae.params, "scale": nz.scale_from_max(one.max)})
        meta = {**sae.meta, "normalized_on": {"store": str(store.url), "layer": layer,
                                              "n_proteins": n_prot, "n_tokens": one.n_tokens}}
        target = as_path(sweep) / "saes" / sae_id
        save_sae(target, dataclasses.replace(sae, params=params, meta=meta))
        nz.write_feature_stats(target, one, {"store": str(store.url)})
        click.echo(f"{sae_id}: {len(one.dead)} of {len(one.max)} features never fired -> {target}")


if __name__ == "__main__":
    main()
