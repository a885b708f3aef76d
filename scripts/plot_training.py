#!/usr/bin/env python
"""Draw the training curves of a sweep (loss, L0, fraction of variance explained) to a PNG."""

from __future__ import annotations

import io
import json

import click

from interplm_jax.cli import command
from interplm_jax.errors import InputError
from interplm_jax.paths import AnyPath, as_path, write_atomic


def read_metrics(sweep: AnyPath) -> dict[str, dict[str, list[float]]]:
    """SAE id -> metric -> values in step order (metrics.jsonl of a sweep directory)."""
    path = sweep / "metrics.jsonl"
    if not path.exists():
        raise InputError(f"{path}: not found; is {sweep} a sweep directory?")
    curves: dict[str, dict[str, list[float]]] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            sae = row["sae"]
        except (json.JSONDecodeError, KeyError):
            raise InputError(f"{path}:{n}: not a metrics line") from None
        for k, v in row.items():
            if isinstance(v, (int, float)):
                curves.setdefault(sae, {}).setdefault(k, []).append(float(v))
    return curves


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
    grid_path = sweep / "grid.json"
    labels = {}
    if grid_path.exists():
        for row in json.loads(grid_path.read_text()):
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
    fig.tight_layout()
    target = as_path(out) if out else sweep / "training.png"
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=120)
    write_atomic(target, png.getvalue())
    click.echo(f"wrote {target}")


if __name__ == "__main__":
    main()
