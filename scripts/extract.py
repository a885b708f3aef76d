#!/usr/bin/env python
"""Extract protein LM (ESM-2, ESM C) hidden states of the proteins of a FASTA file into an activation store."""

from __future__ import annotations

import click

from interplm_jax.cli import command, parse_layers, parse_worker
from interplm_jax.config import config_options
from interplm_jax.fasta import read_fasta, sample_proteins
from torch_bridge.esm import ExtractConfig, extract_to_store


@click.command(context_settings={"show_default": True})
@click.option("--fasta", required=True, type=click.Path(dir_okay=False), help="FASTA file (plain or .gz).")
@click.option("--model", required=True, help="Hub name (facebook/esm2_t6_8M_UR50D, biohub/ESMC-300M) or local directory of an ESM-2 or ESM C checkpoint.")
@click.option("--layers", required=True, help="Layers to store, e.g. 1,2,3 or 1-6 (hidden_states[L]; 0 = embeddings).")
@click.option("--out", required=True, help="Store directory or gs:// URL (created, or resumed if it exists).")
@click.option("--id-style", type=click.Choice(["auto", "first-word"]), default="auto",
              help="Protein ids: UniProt accession from sp|ACC|NAME headers (auto), or the header's first word.")
@click.option("--sample", type=int, default=None, help="Use N proteins drawn at random (seeded) instead of all.")
@click.option("--sample-seed", default=0, help="Seed of --sample.")
@click.option("--worker", default="0/1", help="I/N: this process extracts shards s with s % N == I.")
@click.option("--device", default=None, help="torch device (default: cuda if available, else cpu).")
@command
@config_options(ExtractConfig, "extract", skip=("model", "layers"))
def main(fasta, model, layers, out, id_style, sample, sample_seed, worker, device, cfg):
    """Extract hidden states after the chosen layers (no <cls>/<eos> rows) into a TensorStore
    activation store, shard by shard. Rerun the same command to resume after an interruption;
    run it with --worker 0/N .. N-1/N on several processes, GPUs or hosts to share the work."""
    worker_ix = parse_worker(worker)
    proteins, report = read_fasta(fasta, max_length=cfg.max_length, on_invalid=cfg.on_invalid,
                                  id_style=id_style)
    if report.skipped:
        click.echo(f"skipped {len(report.skipped)} invalid record(s): {report.counts()}", err=True)
    if sample is not None:
        proteins = sample_proteins(proteins, sample, cfg.max_length, sample_seed)
    store = extract_to_store(proteins, model, parse_layers(layers), out, shard_size=cfg.shard_size,
                             max_tokens=cfg.max_tokens, worker=worker_ix, device=device,
                             store_dtype=cfg.store_dtype)
    click.echo(store.summary() if store else f"{out}: this worker's shards are done; "
               "the store completes when every worker's are")


if __name__ == "__main__":
    main()
