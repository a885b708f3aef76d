#!/usr/bin/env python
"""Clamp an SAE feature inside the protein LM (ESM-2, ESM C) and show how amino-acid probabilities follow the value."""

from __future__ import annotations

import click

from interplm_jax.cli import command, parse_layers
from interplm_jax.errors import InputError


def _values(text: tuple[str, ...]) -> list[float]:
    out = []
    for part in ",".join(text).split(","):
        if part.strip():
            try:
                out.append(float(part))
            except ValueError:
                raise InputError(f"--value: {part!r} is not a number") from None
    if not out:
        raise InputError("--value: give at least one clamp value")
    return out


@click.command(context_settings={"show_default": True})
@click.option("--model", required=True, help="Hub name or local directory of an ESM-2 or ESM C masked LM.")
@click.option("--sae", "sae_path", required=True, type=click.Path(exists=True),
              help="SAE: our directory, an InterPLM ae.pt (or its directory) or a SAELens folder.")
@click.option("--layer", type=int, default=None, help="Layer L the SAE reads (default: the SAE's own).")
@click.option("--feature", type=int, required=True, help="Feature to clamp (0-based).")
@click.option("--value", "values", multiple=True, required=True,
              help="Clamp value(s): repeat or comma-separate, e.g. --value 0,0.5,1,2.")
@click.option("--sequence", required=True, help="Protein sequence (one-letter codes).")
@click.option("--positions", default=None,
              help="Residues to clamp, 1-based, e.g. 5,9-12 (default: every residue).")
@click.option("--aa", "amino_acids", default="ACDEFGHIKLMNPQRSTVWY",
              help="Amino acids whose probabilities are reported.")
@click.option("--units", type=click.Choice(["normalized", "raw"]), default="normalized",
              help="Clamp values in normalized units (1 = max on the normalization set) or raw.")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Write the table (TSV: value, amino acid, mean probability) here.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="Save a plot of probability vs clamp value (PNG/PDF by suffix).")
@click.option("--device", default="cpu", help="torch device.")
@command
def main(model, sae_path, layer, feature, values, sequence, positions, amino_acids, units, out,
         plot, device):
    """At layer L: f = encode(h), err = h - decode(f), clamp the feature, h' = decode(f') + err,
    continue; report the mean probability (over the clamped residues) of each chosen amino
    acid for each clamp value, next to the unsteered model."""
    from interplm_jax.atomic import atomic_path, atomic_write
    from torch_bridge.export import load_any
    from torch_bridge.models import load_masked_lm
    from torch_bridge.sae import TorchSAE
    from torch_bridge.steering import clamp_sweep, steer

    saved = load_any(sae_path)
    layer = layer if layer is not None else saved.meta.get("layer")
    if layer is None:
        raise InputError("the SAE does not record its layer: pass --layer")
    bad = sorted(set(amino_acids) - set("ACDEFGHIKLMNPQRSTVWY"))
    if bad:
        raise InputError(f"--aa: {bad} are not amino-acid letters")
    pos = None
    if positions is not None:
        try:
            pos = [p - 1 for p in parse_layers(positions)]
        except InputError as e:
            raise InputError(str(e).replace("--layers", "--positions")) from None
    lm, tokenizer = load_masked_lm(model, device)
    sae = TorchSAE.from_saved(saved).to(device)
    vals = _values(values)
    res = steer(lm, tokenizer, sae, int(layer), sequence.strip().upper(),
                clamp_sweep(feature, vals, pos), units=units)
    probs = res.aa_probs(amino_acids)  # (C, length, A)
    where = slice(None) if pos is None else pos
    mean = probs[:, where].mean(axis=1)  # (C, A)
    labels = ["unsteered"] + [f"{v:g}" for v in vals]
    lines = ["value\t" + "\t".join(amino_acids)]
    lines += [lab + "\t" + "\t".join(f"{p:.4f}" for p in row) for lab, row in zip(labels, mean)]
    table = "\n".join(lines) + "\n"
    click.echo(table, nl=False)
    if out:
        atomic_write(out, table)
    if plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for a, aa in enumerate(amino_acids):
            line, = ax.plot(vals, mean[1:, a], marker="o", label=aa)
            ax.axhline(mean[0, a], color=line.get_color(), ls=":", lw=0.8)
        ax.set_xlabel(f"feature {feature} clamped to ({units})")
        ax.set_ylabel("mean probability")
        ax.set_title(f"layer {layer}; dotted: unsteered")
        ax.legend(ncol=4, fontsize=7)
        fig.tight_layout()
        with atomic_path(plot) as tmp:
            fig.savefig(tmp)
        plt.close(fig)


if __name__ == "__main__":
    main()
