#!/usr/bin/env python
"""Swiss-Prot concept evaluation: labels -> split -> f1 -> select -> report (docs/concepts.md)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click
import numpy as np

from interplm_jax.cli import command, parse_worker
from interplm_jax.concepts.config import ConceptsConfig
from interplm_jax.config import config_options
from interplm_jax.errors import InputError

log = logging.getLogger("evaluate_concepts")


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
    from interplm_jax.atomic import atomic_write
    from interplm_jax.concepts.labels import build_labels
    from interplm_jax.concepts.flatfile import count_entries
    from interplm_jax.concepts.uniprot import ParseReport, read_uniprot_tsv
    from interplm_jax.progress import progress_bar, progress_enabled

    report = ParseReport(tsv)
    bar = progress_bar(count_entries(tsv) if progress_enabled() else None, desc="labels",
                       unit="protein")

    def rows():
        for row in read_uniprot_tsv(tsv, cfg.on_malformed, report):
            bar.update(1)
            yield row

    with bar:
        lab = build_labels(rows(), cfg.min_instances, cfg.max_length, cfg.require_alphafold,
                           cfg.drop_duplicates, cfg.amino_acids, cfg.reference_parsing)
    lab.meta["parse"] = report.as_dict()
    if report.malformed:
        log.warning("%d malformed row(s) left out, e.g. line %d, protein %r, column %r: %s",
                    len(report.malformed), *report.malformed[0])
    lab.save(out)
    res, dom = lab.counts(np.arange(lab.n_proteins))
    summary = {"n_proteins": lab.n_proteins, "n_residues": int(lab.offsets[-1]),
               "concepts": [{"concept": c, "residues": int(r), "domains": int(d)}
                            for c, r, d in zip(lab.concepts, res, dom)], **lab.meta}
    atomic_write(Path(out).with_suffix(".json"), json.dumps(summary, indent=1))
    click.echo(f"{out}: {lab.n_proteins} proteins, {lab.n_concepts} concepts; "
               f"{len(report.malformed)} malformed row(s) skipped")


@main.command()
@click.option("--labels", "labels_path", required=True, type=click.Path(dir_okay=False), help="labels.npz from `labels`.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Directory for evalset.json, proteins.fasta, concepts_kept.csv.")
@click.option("--model", default=None, help="ESM-2 name or path: also extract the sampled proteins' activations into --store.")
@click.option("--layers", default=None, help="Layers to extract (with --model), e.g. 1-6.")
@click.option("--store", default=None, help="Activation store to create or resume (with --model).")
@click.option("--device", default=None, help="torch device of the extraction.")
@click.option("--shard-size", default=1000, show_default=True, help="Proteins per store shard.")
@command
@config_options(ConceptsConfig, "concepts", "n_proteins", "seed", "max_length", "valid_fraction",
                "select_fraction", "min_domains", "min_residues", "count_on")
def split(labels_path, out, model, layers, store, device, shard_size, cfg):
    """Sample proteins (seeded), split valid/test (+ the select subset of valid) and keep the
    concepts with enough domains or residues; optionally extract their activations."""
    from interplm_jax.concepts.evalset import make_eval_set
    from interplm_jax.concepts.labels import ConceptLabels
    from interplm_jax.concepts.report import write_csv
    from interplm_jax.fasta import Protein, write_fasta

    lab = ConceptLabels.load(labels_path)
    es = make_eval_set(lab, cfg.n_proteins, cfg.seed, cfg.max_length, cfg.valid_fraction,
                       cfg.select_fraction, cfg.min_domains, cfg.min_residues, cfg.count_on)
    out = Path(out)
    es.save(out / "evalset.json")
    ids = sorted(set(es.valid) | set(es.test), key=lambda i: int(lab.indices([i])[0]))
    proteins = [Protein(i, lab.sequence(int(p))) for i, p in zip(ids, lab.indices(ids))]
    write_fasta(out / "proteins.fasta", proteins)
    write_csv(out / "concepts_kept.csv", [
        {"concept": c, **{f"{s}_{k}": es.counts[s][k][j] for s in ("valid", "test") for k in ("residues", "domains")}}
        for j, c in enumerate(es.concepts)])
    m = es.meta
    click.echo(f"{out}: {len(es.valid)} valid / {len(es.test)} test proteins ({len(es.select)} for "
               f"selection); kept {m['n_concepts_kept_reported']} concepts (+{m['n_concepts_kept'] - m['n_concepts_kept_reported']} "
               f"amino-acid) of {m['n_concepts_total']}")
    if model is not None:
        if not (layers and store):
            raise InputError("--model needs --layers and --store")
        from interplm_jax.cli import parse_layers
        from torch_bridge.esm import extract_to_store

        st = extract_to_store(proteins, model, parse_layers(layers), store, shard_size=shard_size, device=device)
        click.echo(st.summary() if st else f"{store}: not complete yet")


def _features(sae, neurons, neuron_stats, activations):
    """(features callable, n_features, id string, kind) from the f1 options."""
    from interplm_jax.concepts.encoders import neuron_features, sae_features

    if (sae is None) == (not neurons):
        raise InputError("give exactly one of --sae DIR or --neurons")
    if sae is not None:
        fn, n_features, arch, meta = sae_features(sae, normalized=activations == "normalized")
        baseline = meta.get("baseline")  # "neuron" for the neuron-baseline SAE
        kind = {"neuron": "neurons"}.get(baseline, baseline or "sae")
        return fn, n_features, f"{Path(sae).resolve()}:{arch}:{activations}", kind
    lo = hi = None
    if neuron_stats is not None:
        lo, hi = np.load(Path(neuron_stats) / "min.npy"), np.load(Path(neuron_stats) / "max.npy")
    return neuron_features(lo, hi), None, f"neurons:{neuron_stats}", "neurons"


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
@click.option("--kind", default=None, type=click.Choice(["sae", "shuffled", "neurons"]), help="Row kind in the report (default from the SAE's metadata).")
@click.option("--worker", default="0/1", show_default=True, help="I/N: count the I-th of N parts of the split (sum the parts with `merge`).")
@command
@config_options(ConceptsConfig, "concepts", "thresholds", "activations", "chunk_residues")
def f1(labels_path, evalset, store, layer, split_name, sae, neurons, neuron_stats, out, name,
       model_name, kind, worker, cfg):
    """Count TP, FP and domains hit for every (feature, kept concept, threshold) on one split."""
    from interplm_jax.concepts.evalset import EvalSet
    from interplm_jax.concepts.labels import ConceptLabels
    from interplm_jax.concepts.metrics import concept_table
    from interplm_jax.concepts.report import write_csv
    from interplm_jax.concepts.stream import count_split
    from interplm_jax.store import ActivationStore

    st = ActivationStore.open(store)
    fn, n_features, fid, default_kind = _features(sae, neurons, neuron_stats, cfg.activations)
    n_features = n_features or st.d_model
    name = name or (Path(sae).name if sae else "neurons")
    meta = {"name": name, "model": model_name, "kind": kind or default_kind, "sae": str(sae or ""),
            "activations": cfg.activations, "store": store}
    counts = count_split(st, layer, ConceptLabels.load(labels_path), EvalSet.load(evalset), split_name,
                         fn, n_features, cfg.thresholds, cfg.chunk_residues,
                         checkpoint=str(out) + ".partial.npz", meta=meta, features_id=fid,
                         worker=parse_worker(worker))
    counts.save(out)
    table = concept_table(counts)
    write_csv(Path(out).with_suffix(".csv"), table)
    f1s = [r["f1"] for r in table]
    click.echo(f"{out}: {counts.n_proteins} proteins, {counts.n_features} features x "
               f"{len(counts.concepts)} concepts; mean best F1 {np.mean(f1s) if f1s else 0:.3f}")


@main.command()
@click.argument("parts", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Counts file of the whole split (.npz; + .csv).")
@command
def merge(parts, out):
    """Sum the counts of `f1 --worker I/N` parts (disjoint proteins of one split)."""
    from interplm_jax.concepts.f1 import ConceptCounts
    from interplm_jax.concepts.metrics import concept_table
    from interplm_jax.concepts.report import write_csv

    loaded = [ConceptCounts.load(p) for p in parts]
    seen = sorted(tuple(c.meta.get("worker", (0, 1))) for c in loaded)
    n = seen[0][1]
    if seen != [(i, n) for i in range(n)]:
        raise InputError(f"parts are workers {seen}; expected each of 0/{n} .. {n - 1}/{n} once")
    total = loaded[0]
    for c in loaded[1:]:
        total = total + c
    total.save(out)
    write_csv(Path(out).with_suffix(".csv"), concept_table(total))
    click.echo(f"{out}: {total.n_proteins} proteins from {len(parts)} part(s)")


@main.command()
@click.argument("counts", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="CSV: every candidate's score and the chosen one per (model, layer).")
@command
def select(counts, out):
    """Choose the best SAE per (model, layer) by mean best F1 per concept, from counts files
    made with `f1 --split select`."""
    from interplm_jax.concepts.f1 import ConceptCounts
    from interplm_jax.concepts.metrics import select_best
    from interplm_jax.concepts.report import write_csv

    groups: dict[tuple, dict] = {}
    for path in counts:
        c = ConceptCounts.load(path)
        key = (c.meta.get("model", "model"), c.meta.get("kind", "sae"), c.meta.get("layer"))
        name = c.meta.get("name") or Path(path).stem
        if name in groups.setdefault(key, {}):
            raise InputError(f"{path}: two candidates named {name!r} for {key}")
        groups[key][name] = (c, path)
    rows = []
    for (model, kind, layer), cands in sorted(groups.items(), key=lambda kv: str(kv[0])):
        best, score = select_best({n: c for n, (c, _) in cands.items()})
        for n, s in score.items():
            rows.append({"model": model, "kind": kind, "layer": layer, "name": n,
                         "counts": cands[n][1], "mean_best_f1": s, "selected": n == best})
        click.echo(f"{model} {kind} layer {layer}: {best} (mean best F1 {score[best]:.3f} of {len(cands)})")
    write_csv(out, rows)


@main.command()
@click.option("--run", "runs", multiple=True, required=True,
              help="VALID_COUNTS,TEST_COUNTS of one selected SAE or baseline (repeat per layer/model/kind).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Directory for the CSV tables and the PNG.")
@command
@config_options(ConceptsConfig, "concepts", "top_f1", "reference_test")
def report(runs, out, cfg):
    """Held-out report: per concept, the feature chosen on valid and its test F1; pairs with
    valid F1 > top and how many keep test F1 > top; summary.csv and concepts_per_layer.png."""
    from interplm_jax.concepts.f1 import ConceptCounts
    from interplm_jax.concepts.metrics import heldout_report
    from interplm_jax.concepts.report import plot_concepts_per_layer, write_csv

    out = Path(out)
    summary = []
    for run in runs:
        parts = run.split(",")
        if len(parts) != 2:
            raise InputError(f"--run {run!r}: expected VALID_COUNTS,TEST_COUNTS")
        valid, test = ConceptCounts.load(parts[0]), ConceptCounts.load(parts[1])
        rep = heldout_report(valid, test, cfg.top_f1, cfg.reference_test)
        m = valid.meta
        # model, kind, layer and the SAE's name: two SAEs of one layer get their own files
        tag = f"{m.get('model', 'model')}_{m.get('kind', 'sae')}_L{m.get('layer')}_{m.get('name')}"
        write_csv(out / f"per_concept_{tag}.csv", rep.per_concept)
        write_csv(out / f"pairs_{tag}.csv", rep.pairs,
                  ["concept", "feature", "valid_f1", "test_f1", "test_threshold"])
        summary.append({"model": m.get("model", "model"), "kind": m.get("kind", "sae"),
                        "layer": m.get("layer"), "name": m.get("name"), **rep.summary()})
        click.echo(f"{tag}: mean test F1 {rep.mean_test_f1:.3f}; {rep.n_pairs_test} of "
                   f"{rep.n_pairs_valid} pairs keep F1 > {cfg.top_f1}; {rep.n_concepts_test} concepts")
    write_csv(out / "summary.csv", summary)
    plot_concepts_per_layer(summary, out / "concepts_per_layer.png")


if __name__ == "__main__":
    main()
