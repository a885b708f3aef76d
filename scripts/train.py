#!/usr/bin/env python
"""Train a grid of SAEs per layer on an activation store (the ``train:`` section of a config)."""

from __future__ import annotations

import click

from interplm_jax.cli import command, parse_layers
from interplm_jax.config import config_options
from interplm_jax.train.config import TrainConfig


@click.command(context_settings={"show_default": True})
@click.option("--store", default=None, help="Activation store (local or gs://); default: train.store.")
@click.option("--out", default=None,
              help="Output directory; each layer's sweep goes to <out>/layer_<L>; default: train.out.")
@click.option("--resume", is_flag=True,
              help="Continue from the newest checkpoint of each sweep (bit-identical on the CPU).")
@click.option("--layers", default=None, help="Only these layers, e.g. 1,3 (default: train.layers, else all).")
@command
@config_options(TrainConfig, "train", skip=("store", "out", "layers"))
def main(store, out, resume, layers, cfg):
    """Train every SAE of the grid together (one compiled, vmapped step; all devices and hosts)
    on each layer in turn; write config.yaml, grid.json, metrics.jsonl and orbax checkpoints."""
    from interplm_jax.train.run import train_layers

    config = click.get_current_context().params.get("config")
    results = train_layers(cfg, store, out, resume, parse_layers(layers) if layers else None,
                           where=f"{config}:train" if config else "train options")
    for layer, r in results.items():
        frozen = [row["id"] for row, ok in zip(r.grid, r.ok) if not ok]
        click.echo(f"layer {layer}: {len(r.grid)} SAEs, step {r.step} -> {r.out}"
                   + (f"; frozen after a non-finite loss: {frozen}" if frozen else ""))
        for warning in r.preflight:
            click.echo(f"  preflight warning: {warning}", err=True)


if __name__ == "__main__":
    main()
