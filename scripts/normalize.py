#!/usr/bin/env python
"""Normalize SAE features by their maximum over a store; or build the neuron baseline."""

from __future__ import annotations

import click

from interplm_jax.cli import command
from interplm_jax.config import config_options
from interplm_jax.errors import InputError
from interplm_jax.normalize import NormalizeConfig
from interplm_jax.paths import as_path


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
        nz.write_neuron_baseline(sae_dir, act, layer, chunk_tokens, proteins)
        click.echo(f"neuron baseline of layer {layer} ({act.d_model} neurons) written to {sae_dir}")
        return
    if sweep:
        for sae_id, (stats, target) in nz.normalize_sweep(sweep, act, layer, chunk_tokens,
                                                          proteins).items():
            click.echo(f"{sae_id}: {len(stats.dead)} of {len(stats.max)} features never fired "
                       f"-> {target}")
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


if __name__ == "__main__":
    main()
