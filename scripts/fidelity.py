#!/usr/bin/env python
"""Loss recovered of SAEs spliced into the protein LM (ESM-2, ESM C) at their layer, as a table."""

from __future__ import annotations

import click

from interplm_jax.cli import command
from interplm_jax.config import config_options
from interplm_jax.errors import InputError
from interplm_jax.fasta import DEFAULT_MAX_LENGTH
from torch_bridge.fidelity import FidelityConfig


@click.command(context_settings={"show_default": True})
@click.option("--model", required=True, help="Hub name or local directory of an ESM-2 or ESM C masked LM.")
@click.option("--fasta", required=True, type=click.Path(dir_okay=False), help="Held-out proteins.")
@click.option("--sweep", type=click.Path(file_okay=False), default=None,
              help="Sweep directory: every SAE of it (or those named with --sae-id).")
@click.option("--sae-id", "sae_ids", multiple=True, help="SAE id of the sweep (repeatable).")
@click.option("--sae", "sae_paths", multiple=True, type=click.Path(exists=True),
              help="SAE directory or file (ours, InterPLM, SAELens); repeatable.")
@click.option("--layer", type=int, default=None, help="Layer L (default: the SAEs' own).")
@click.option("--max-length", default=DEFAULT_MAX_LENGTH, help="Longest protein accepted (residues).")
@click.option("--on-invalid", type=click.Choice(["error", "skip"]), default="error",
              help="Invalid FASTA records (too long, bad characters): stop, or skip and count them.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the table (TSV) here.")
@click.option("--device", default="cpu", help="torch device.")
@command
@config_options(FidelityConfig, "fidelity")
def main(model, fasta, sweep, sae_ids, sae_paths, layer, max_length, on_invalid, out, device, cfg):
    """CE of the model with each SAE's reconstruction spliced in at layer L, vs the clean model and
    zero-ablation; loss recovered = (CE_zero - CE_sae) / (CE_zero - CE_clean), one row per SAE."""
    from interplm_jax.atomic import atomic_write
    from interplm_jax.fasta import read_fasta
    from torch_bridge.export import load_any
    from torch_bridge.fidelity import fidelity_table, format_table
    from torch_bridge.models import load_masked_lm
    from torch_bridge.sae import TorchSAE

    saes = {}
    if sweep:
        from interplm_jax.sweep_saes import read_sweep

        saes.update(read_sweep(sweep, list(sae_ids) or None))
    elif sae_ids:
        raise InputError("--sae-id selects SAEs of a --sweep")
    for path in sae_paths:
        saes[str(path)] = load_any(path)
    if not saes:
        raise InputError("give --sweep or at least one --sae")
    layers = {s.meta.get("layer") for s in saes.values()}
    if layer is None:
        if len(layers) != 1 or None in layers:
            raise InputError(f"the SAEs record layers {sorted(map(str, layers))}: pass --layer")
        layer = layers.pop()
    proteins, _ = read_fasta(fasta, max_length=max_length, on_invalid=on_invalid)
    sequences = [p.sequence for p in proteins][:cfg.max_proteins]
    lm, tokenizer = load_masked_lm(model, device)
    torch_saes = {k: TorchSAE.from_saved(s).to(device) for k, s in saes.items()}
    rows = fidelity_table(lm, tokenizer, sequences, int(layer), torch_saes, cfg.batch_size,
                          cfg.mask_fraction, cfg.seed, device)
    table = format_table(rows)
    click.echo(table, nl=False)
    if out:
        atomic_write(out, table)


if __name__ == "__main__":
    main()
