#!/usr/bin/env python
"""Draw the training curves of a sweep (loss, L0, fraction of variance explained) to a PNG."""

from __future__ import annotations

import io

import click

from interplm_jax.cli import command
from interplm_jax.errors import InputError
from interplm_jax.layout import SweepFiles
from interplm_jax.paths import as_path, write_atomic
from interplm_jax.sweep_saes import read_grid, read_metrics


@click.command(context_settings={"show_default": True})
@click.option("--sweep", required=True, help="Sweep directory (local or gs://).")
@click.option("--out", default=None, help="PNG to write; default <sweep>/training.png.")
@click.option("--metrics", default="loss,l0,fve", help="Metrics to draw, one panel each.")
@command
def main(sweep, out, metrics):
    """One panel per metric, one curve per SAE (labelled with its hyperparameters)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = as_path(sweep)
    curves = read_metrics(sweep)
    labels = {}
    if SweepFiles(sweep).grid.exists():
        for row in read_grid(sweep):
            labels[row["id"]] = ", ".join(f"{k}={v:g}" for k, v in row.items()
                                          if k not in ("id", "arch", "seed"))
    names = [m.strip() for m in metrics.split(",") if m.strip()]
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        for sae, c in sorted(curves.items()):
            if name not in c:
                raise InputError(f"{sweep}/metrics.jsonl has no metric {name!r}; has {sorted(c)}")
            ax.plot(c["step"], c[name], label=labels.get(sae, sae))
        ax.set_xlabel("step")
        ax.set_title(name)
        if name in ("loss", "l0", "mse"):
            ax.set_yscale("log")
    axes[0][0].legend(fontsize=6)
    fig.suptitle(f"sweep {sweep.name}: {len(curves)} SAE(s)")  # e.g. "sweep layer_4: 4 SAE(s)"
    fig.tight_layout()
    target = as_path(out) if out else sweep / "training.png"
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=120)
    write_atomic(target, png.getvalue())
    click.echo(f"wrote {target}")


if __name__ == "__main__":
    main()
