#!/usr/bin/env python
"""Make the shuffled-weight baseline of a protein LM (ESM-2, ESM C): every weight and bias tensor's values permuted (seeded)."""

from __future__ import annotations

import click

from interplm_jax.cli import command


@click.command(context_settings={"show_default": True})
@click.option("--model", required=True, help="Hub name or local directory (ESM-2 or ESM C) to copy.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="New directory for the shuffled model.")
@click.option("--seed", default=0, help="Seed of the permutations.")
@command
def main(model, out, seed):
    """Save a copy of MODEL whose parameters' values are permuted within each tensor; the output
    loads with from_pretrained, so scripts/extract.py --model OUT runs the same extraction on it."""
    from torch_bridge.shuffled import save_shuffled_esm

    click.echo(save_shuffled_esm(model, out, seed))


if __name__ == "__main__":
    main()
