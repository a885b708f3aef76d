#!/usr/bin/env python
"""Check FASTA files and draw seeded random subsets of them."""

from __future__ import annotations

import sys

import click

from interplm_jax.cli import command
from interplm_jax.fasta import DEFAULT_MAX_LENGTH, read_fasta, sample_proteins, write_fasta

_on_invalid = click.option("--on-invalid", type=click.Choice(["error", "skip"]), default="error",
                           show_default=True,
                           help="Invalid records: stop with a report, or skip and count them.")


@click.group()
def cli():
    """FASTA utilities."""


@cli.command()
@click.argument("fasta", type=click.Path(dir_okay=False))
@click.option("--max-length", default=DEFAULT_MAX_LENGTH, show_default=True, help="Longest protein accepted.")
@_on_invalid
@command
def check(fasta, max_length, on_invalid):
    """Validate FASTA: report empty, duplicate, bad-character and too-long records."""
    proteins, report = read_fasta(fasta, max_length=max_length, on_invalid=on_invalid)
    lengths = sorted(len(p.sequence) for p in proteins)
    click.echo(f"{fasta}: {report.n_records} records, {report.n_kept} valid "
               f"(lengths {lengths[0]}..{lengths[-1]}, median {lengths[len(lengths) // 2]})")
    for rid, line, why in report.skipped:
        click.echo(f"  line {line}: {rid}: {why}")


@cli.command()
@click.argument("fasta", type=click.Path(dir_okay=False))
@click.option("--n", "n", required=True, type=int, help="Number of proteins to draw.")
@click.option("--max-sample-length", type=int, default=DEFAULT_MAX_LENGTH, show_default=True,
              help="Draw only among proteins <= this many residues (longer ones are not drawn; "
                   "they are not invalid).")
@click.option("--seed", default=0, show_default=True, help="Random seed.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output FASTA (.gz to compress).")
@_on_invalid
@command
def sample(fasta, n, max_sample_length, seed, out, on_invalid):
    """Write N proteins drawn at random (seeded, in file order) to a new FASTA."""
    # Length decides which proteins may be drawn, so no record is invalid for its length here.
    proteins, _ = read_fasta(fasta, max_length=sys.maxsize, on_invalid=on_invalid)
    write_fasta(out, sample_proteins(proteins, n, max_sample_length, seed))
    click.echo(f"wrote {n} proteins to {out}")


if __name__ == "__main__":
    cli()
