#!/usr/bin/env python
"""Export SAEs to InterPLM (ae.pt + config.yaml) or SAELens folders; import them back."""

from __future__ import annotations

from pathlib import Path

import click

from interplm_jax.cli import command
from interplm_jax.errors import InputError
from interplm_jax.sae import EXPORTABLE_ARCHS


@click.command(context_settings={"show_default": True})
@click.option("--sweep", type=click.Path(file_okay=False), default=None,
              help="Sweep directory (grid.json + checkpoints/): export its SAEs.")
@click.option("--sae", "sae_ids", multiple=True,
              help="SAE id of the sweep to export (repeat for several; default: all).")
@click.option("--step", type=int, default=None, help="Checkpoint step of the sweep (default: newest).")
@click.option("--sae-dir", type=click.Path(file_okay=False), default=None,
              help="An SAE directory of ours (sae.json + params.safetensors) to export.")
@click.option("--interplm", "interplm_in", type=click.Path(), default=None,
              help="Import an InterPLM ae.pt / ae_normalized.pt (or its directory).")
@click.option("--arch", type=click.Choice(EXPORTABLE_ARCHS), default=None,
              help="Architecture of --interplm when its keys do not tell (TopK vs BatchTopK).")
@click.option("--saelens", "saelens_in", type=click.Path(file_okay=False), default=None,
              help="Import a SAELens folder (cfg.json + sae_weights.safetensors).")
@click.option("--format", "fmt", type=click.Choice(["interplm", "saelens", "native"]), required=True,
              help="Output format: InterPLM ae.pt + config.yaml, SAELens folder, or our SAE directory.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output directory (one subdirectory per SAE id when exporting a sweep).")
@click.option("--fold-scale/--raw-scale", default=None,
              help="SAELens, normalized SAEs: fold the scale into the weights (the default where "
                   "the architecture allows: SAELens then gives the normalized features), or keep "
                   "the weights raw with the scale in interplm_feature_scale.safetensors (TopK "
                   "always). cfg.json says which.  [default: fold]")
@command
def main(sweep, sae_ids, step, sae_dir, interplm_in, arch, saelens_in, fmt, out, fold_scale):
    """Write SAEs in the format torch tools load, or bring torch SAEs into ours.

    Exactly one source: --sweep (optionally --sae ID ...), --sae-dir, --interplm or --saelens.
    Every file is written atomically.
    """
    from interplm_jax.sae_dir import load_sae, save_sae
    from torch_bridge import export, saelens

    sources = [s for s in (sweep, sae_dir, interplm_in, saelens_in) if s is not None]
    if len(sources) != 1:
        raise InputError("give exactly one of --sweep, --sae-dir, --interplm, --saelens")
    if sae_ids and not sweep:
        raise InputError("--sae selects SAEs of a --sweep")
    if sweep:
        from interplm_jax.sweep_saes import read_sweep

        saes = read_sweep(sweep, list(sae_ids) or None, step)
        targets = {sae_id: Path(out) / sae_id for sae_id in saes}
    else:
        if sae_dir:
            sae = load_sae(sae_dir)
        elif interplm_in:
            sae = export.read_interplm(interplm_in, arch)
        else:
            sae = saelens.read_saelens(saelens_in)
        saes, targets = {"sae": sae}, {"sae": Path(out)}
    for sae_id, sae in saes.items():
        target = targets[sae_id]
        if fmt == "interplm":
            export.write_interplm(sae, target)
        elif fmt == "saelens":
            saelens.write_saelens(sae, target, fold_scale=fold_scale)
        else:
            save_sae(target, sae)
        click.echo(f"{sae_id}: {sae.arch} SAE {sae.d_model} -> {sae.n_features} written to {target} ({fmt})")


if __name__ == "__main__":
    main()
