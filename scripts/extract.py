#!/usr/bin/env python
"""Extract protein LM (ESM-2, ESM C) hidden states of the proteins of a FASTA file into an activation store."""

from __future__ import annotations

import click

from interplm_jax.cli import command, parse_layers
from interplm_jax.config import field_help
from interplm_jax.fasta import read_fasta, sample_proteins
from torch_bridge.esm import ExtractConfig, extract_to_store, parse_worker

D, H = ExtractConfig, field_help(ExtractConfig)


@click.command(context_settings={"show_default": True})
@click.option("--fasta", required=True, type=click.Path(dir_okay=False), help="FASTA file (plain or .gz).")
@click.option("--model", required=True, help="Hub name (facebook/esm2_t6_8M_UR50D, biohub/ESMC-300M) or local directory of an ESM-2 or ESM C checkpoint.")
@click.option("--layers", required=True, help="Layers to store, e.g. 1,2,3 or 1-6 (hidden_states[L]; 0 = embeddings).")
@click.option("--out", required=True, help="Store directory or gs:// URL (created, or resumed if it exists).")
@click.option("--max-length", default=D.max_length, help=H["max_length"])
@click.option("--on-invalid", type=click.Choice(["error", "skip"]), default=D.on_invalid,
              help="Invalid records (empty, duplicate id, bad characters, too long): stop, or skip and count.")
@click.option("--id-style", type=click.Choice(["auto", "first-word"]), default="auto",
              help="Protein ids: UniProt accession from sp|ACC|NAME headers (auto), or the header's first word.")
@click.option("--sample", type=int, default=None, help="Use N proteins drawn at random (seeded) instead of all.")
@click.option("--sample-seed", default=0, help="Seed of --sample.")
@click.option("--shard-size", default=D.shard_size, help=H["shard_size"])
@click.option("--max-tokens", default=D.max_tokens, help=H["max_tokens"])
@click.option("--worker", default="0/1", help="I/N: this process extracts shards s with s % N == I.")
@click.option("--device", default=None, help="torch device (default: cuda if available, else cpu).")
@click.option("--store-dtype", type=click.Choice(["float32", "bfloat16"]), default=D.store_dtype,
              help=H["store_dtype"])
@command
def main(fasta, model, layers, out, max_length, on_invalid, id_style, sample, sample_seed,
         shard_size, max_tokens, worker, device, store_dtype):
    """Extract hidden states after the chosen layers (no <cls>/<eos> rows) into a TensorStore
    activation store, shard by shard. Rerun the same command to resume after an interruption;
    run it with --worker 0/N .. N-1/N on several processes, GPUs or hosts to share the work."""
    worker_ix = parse_worker(worker)
    proteins, report = read_fasta(fasta, max_length=max_length, on_invalid=on_invalid, id_style=id_style)
    if report.skipped:
        click.echo(f"skipped {len(report.skipped)} invalid record(s): {report.counts()}", err=True)
    if sample is not None:
        proteins = sample_proteins(proteins, sample, max_length, sample_seed)
    store = extract_to_store(proteins, model, parse_layers(layers), out, shard_size=shard_size,
                             max_tokens=max_tokens, worker=worker_ix, device=device,
                             store_dtype=store_dtype)
    click.echo(store.summary() if store else f"{out}: this worker's shards are done; "
               "the store completes when every worker's are")


if __name__ == "__main__":
    main()
