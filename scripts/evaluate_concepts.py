#!/usr/bin/env python
"""Swiss-Prot concept evaluation: labels -> split -> f1 -> select -> report (docs/concepts.md)."""

from __future__ import annotations

import click
import numpy as np

from interplm_jax.cli import command, parse_worker
from interplm_jax.concepts.config import ConceptsConfig
from interplm_jax.config import config_options
from interplm_jax.errors import InputError


@click.group()
def main():
    """Swiss-Prot concept evaluation of SAE features (and baselines), as in the InterPLM paper.

    \b
    1. labels  UniProt TSV or flat file -> per-residue concept labels (labels.npz)
    2. split   sample proteins, valid/test/select split, kept concepts (+ FASTA, + extraction)
    3. f1      TP/FP/domain counts of every (feature, concept, threshold) on one split
               (merge: sum the parts of `f1 --worker I/N`)
    4. select  best SAE per layer (counts on the select split)
    5. report  held-out test report: tables (CSV) and concepts found per layer (PNG)
    """


@main.command()
@click.option("--tsv", "--uniprot", "tsv", required=True, type=click.Path(dir_okay=False),
              help="UniProtKB TSV, or Swiss-Prot flat file (uniprot_sprot.dat); plain or .gz.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Labels file to write (.npz); a .json summary is written beside it.")
@command
@config_options(ConceptsConfig, "concepts", "min_instances", "max_length", "require_alphafold",
                "drop_duplicates", "amino_acids", "reference_parsing", "on_malformed")
def labels(tsv, out, cfg):
    """Parse a UniProtKB TSV or flat file into per-residue concept labels with one domain id per
    occurrence."""
    from interplm_jax.concepts.run import make_labels

    lab, report = make_labels(tsv, out, cfg)
    click.echo(f"{out}: {lab.n_proteins} proteins, {lab.n_concepts} concepts; "
               f"{len(report.malformed)} malformed row(s) skipped")


@main.command()
@click.option("--labels", "labels_path", required=True, type=click.Path(dir_okay=False), help="labels.npz from `labels`.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Directory for evalset.json, proteins.fasta, concepts_kept.csv.")
@click.option("--model", default=None, help="ESM-2 name or path: also extract the sampled proteins' activations into --store.")
@click.option("--layers", default=None, help="Layers to extract (with --model), e.g. 1-6.")
@click.option("--store", default=None, help="Activation store to create or resume (with --model).")
@click.option("--device", default=None, help="torch device of the extraction.")
@click.option("--shard-size", type=int, default=None,
              help="Proteins per store shard [default: extract.shard_size's default, as extract.py].")
@click.option("--prefer-structures", type=click.Path(file_okay=False, exists=True), default=None,
              help="Directory of AlphaFold DB / PDB files: sample the proteins that have one "
                   "first (so that the feature browser can show them in 3-D).")
@command
@config_options(ConceptsConfig, "concepts", "n_proteins", "seed", "max_length", "valid_fraction",
                "select_fraction", "min_domains", "min_residues", "count_on")
def split(labels_path, out, model, layers, store, device, shard_size, prefer_structures, cfg):
    """Sample proteins (seeded), split valid/test (+ the select subset of valid) and keep the
    concepts with enough domains or residues; optionally extract their activations."""
    from interplm_jax.concepts.run import make_split

    prefer = ()
    if prefer_structures:
        from interplm_jax.analysis.structures import index_directory
        prefer = frozenset(index_directory(prefer_structures))
    es, proteins = make_split(labels_path, out, cfg, prefer)
    m = es.meta
    click.echo(f"{out}: {len(es.valid)} valid / {len(es.test)} test proteins ({len(es.select)} for "
               f"selection); kept {m['n_concepts_kept_reported']} concepts (+{m['n_concepts_kept'] - m['n_concepts_kept_reported']} "
               f"amino-acid) of {m['n_concepts_total']}")
    if model is not None:
        if not (layers and store):
            raise InputError("--model needs --layers and --store")
        from interplm_jax.cli import parse_layers
        from torch_bridge.esm import extract_to_store

        sized = {"shard_size": shard_size} if shard_size is not None else {}
        st = extract_to_store(proteins, model, parse_layers(layers), store, device=device, **sized)
        click.echo(st.summary() if st else f"{store}: not complete yet")


@main.command()
@click.option("--labels", "labels_path", required=True, type=click.Path(dir_okay=False), help="labels.npz from `labels`.")
@click.option("--evalset", required=True, type=click.Path(dir_okay=False), help="evalset.json from `split`.")
@click.option("--store", required=True, help="Activation store with the evaluation proteins.")
@click.option("--layer", required=True, type=int, help="Layer of the store.")
@click.option("--split", "split_name", type=click.Choice(["valid", "test", "select"]), required=True, help="Which proteins.")
@click.option("--sae", default=None, type=click.Path(), help="SAE directory (sae.json + params.safetensors).")
@click.option("--neurons", is_flag=True, help="Neuron baseline instead of an SAE.")
@click.option("--neuron-stats", default=None, type=click.Path(file_okay=False), help="Directory with min.npy/max.npy per neuron for the [0, 1] scaling (without: raw neurons, as the reference).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Counts file (.npz); a per-concept CSV is written beside it.")
@click.option("--name", default=None, help="Name of this SAE in tables (default: the directory name).")
@click.option("--model-name", default="model", show_default=True, help="Model label in tables and plots (e.g. esm2_8m).")
@click.option("--kind", default=None, type=click.Choice(["sae", "shuffled", "random_init", "neurons"]), help="Row kind in the report (default from the SAE's metadata).")
@click.option("--worker", default="0/1", show_default=True, help="I/N: count the I-th of N parts of the split (sum the parts with `merge`).")
@command
@config_options(ConceptsConfig, "concepts", "thresholds", "activations", "chunk_residues")
def f1(labels_path, evalset, store, layer, split_name, sae, neurons, neuron_stats, out, name,
       model_name, kind, worker, cfg):
    """Count TP, FP and domains hit for every (feature, kept concept, threshold) on one split."""
    from interplm_jax.concepts.run import count_f1

    counts, table = count_f1(labels_path, evalset, store, layer, split_name, out, cfg, sae=sae,
                             neurons=neurons, neuron_stats=neuron_stats, name=name,
                             model_name=model_name, kind=kind, worker=parse_worker(worker))
    f1s = [r["f1"] for r in table]
    click.echo(f"{out}: {counts.n_proteins} proteins, {counts.n_features} features x "
               f"{len(counts.concepts)} concepts; mean best F1 {np.mean(f1s) if f1s else 0:.3f}")


@main.command()
@click.argument("parts", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Counts file of the whole split (.npz; + .csv).")
@command
def merge(parts, out):
    """Sum the counts of `f1 --worker I/N` parts (disjoint proteins of one split)."""
    from interplm_jax.concepts.run import merge_counts

    total = merge_counts(parts, out)
    click.echo(f"{out}: {total.n_proteins} proteins from {len(parts)} part(s)")


@main.command()
@click.argument("counts", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="CSV: every candidate's score and the chosen one per (model, layer).")
@command
def select(counts, out):
    """Choose the best SAE per (model, layer) by mean best F1 per concept, from counts files
    made with `f1 --split select`."""
    from interplm_jax.concepts.run import select_saes, selection_lines

    for line in selection_lines(select_saes(counts, out)):
        click.echo(line)


@main.command()
@click.option("--run", "runs", multiple=True, required=True,
              help="VALID_COUNTS,TEST_COUNTS of one selected SAE or baseline (repeat per layer/model/kind).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Directory for the CSV tables and the PNG.")
@command
@config_options(ConceptsConfig, "concepts", "top_f1", "reference_test")
def report(runs, out, cfg):
    """Held-out report: per concept, the feature chosen on valid and its test F1; pairs with
    valid F1 > top and how many keep test F1 > top; summary.csv and concepts_per_layer.png."""
    from interplm_jax.concepts.run import heldout, summary_line

    pairs = []
    for run in runs:
        parts = run.split(",")
        if len(parts) != 2:
            raise InputError(f"--run {run!r}: expected VALID_COUNTS,TEST_COUNTS")
        pairs.append((parts[0], parts[1]))
    for row in heldout(pairs, out, cfg):
        click.echo(summary_line(row, cfg.top_f1))


if __name__ == "__main__":
    main()
