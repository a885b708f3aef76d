"""The concept evaluation's steps from files to files (what ``scripts/evaluate_concepts.py``
and the pipeline's ``evalset`` and ``concepts`` stages call): labels -> split -> f1 -> select
-> report. Each takes the parsed :class:`~interplm_jax.concepts.config.ConceptsConfig`; the
names of the files written come from :mod:`interplm_jax.layout`.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Collection, Sequence

import numpy as np

from interplm_jax import layout
from interplm_jax.atomic import atomic_write
from interplm_jax.concepts.config import ConceptsConfig
from interplm_jax.errors import InputError

log = logging.getLogger(__name__)


def make_labels(tsv: str | os.PathLike, out: str | os.PathLike, cfg: ConceptsConfig):
    """UniProtKB TSV -> per-residue concept labels ``out`` (.npz) and its JSON summary beside it.

    Returns (ConceptLabels, ParseReport)."""
    from interplm_jax.concepts.flatfile import count_entries
    from interplm_jax.concepts.labels import build_labels
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
    atomic_write(layout.labels_summary(out), json.dumps(summary, indent=1))
    return lab, report


def make_split(labels_path: str | os.PathLike, out: str | os.PathLike, cfg: ConceptsConfig,
               prefer: Collection[str] = ()):
    """Sample proteins (seeded; ``prefer``: ids sampled first, e.g. those with a structure),
    split valid/test (+ the select subset of valid), keep the concepts with enough domains or
    residues; write ``out``'s :class:`EvalSetFiles`.

    Returns (EvalSet, the sampled proteins as :class:`~interplm_jax.fasta.Protein` s)."""
    from interplm_jax.concepts.evalset import make_eval_set
    from interplm_jax.concepts.labels import ConceptLabels
    from interplm_jax.concepts.report import write_csv
    from interplm_jax.fasta import Protein, write_fasta

    lab = ConceptLabels.load(labels_path)
    es = make_eval_set(lab, cfg.n_proteins, cfg.seed, cfg.max_length, cfg.valid_fraction,
                       cfg.select_fraction, cfg.min_domains, cfg.min_residues, cfg.count_on,
                       prefer=prefer)
    files = layout.EvalSetFiles(out)
    es.save(files.definition)
    ids = sorted(set(es.valid) | set(es.test), key=lambda i: int(lab.indices([i])[0]))
    proteins = [Protein(i, lab.sequence(int(p))) for i, p in zip(ids, lab.indices(ids))]
    write_fasta(files.fasta, proteins)
    write_csv(files.concepts_kept, [
        {"concept": c, **{f"{s}_{k}": es.counts[s][k][j] for s in ("valid", "test") for k in ("residues", "domains")}}
        for j, c in enumerate(es.concepts)])
    return es, proteins


def _features(sae, neurons: bool, neuron_stats, activations: str):
    """(features callable, n_features, id string, kind) of an SAE directory or the neurons."""
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


def count_f1(labels_path: str | os.PathLike, evalset: str | os.PathLike, store: str | os.PathLike,
             layer: int, split: str, out: str | os.PathLike, cfg: ConceptsConfig, *,
             sae: str | os.PathLike | None = None, neurons: bool = False,
             neuron_stats: str | os.PathLike | None = None, name: str | None = None,
             model_name: str = "model", kind: str | None = None,
             worker: tuple[int, int] = (0, 1)):
    """TP/FP/domain counts of every (feature, kept concept, threshold) on one split: the counts
    file ``out`` (.npz) and its per-concept table beside it, the counts file written last so
    that its presence means both are complete. A killed run resumes from the partial counts
    (:func:`interplm_jax.layout.counts_partial`).

    Returns (ConceptCounts, the per-concept rows)."""
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
            "activations": cfg.activations, "store": str(store)}
    counts = count_split(st, layer, ConceptLabels.load(labels_path), EvalSet.load(evalset), split,
                         fn, n_features, cfg.thresholds, cfg.chunk_residues,
                         checkpoint=layout.counts_partial(out), meta=meta, features_id=fid,
                         worker=worker)
    table = concept_table(counts)
    write_csv(layout.counts_table(out), table)
    counts.save(out)  # last: its presence means the table is there too (the pipeline skips it)
    return counts, table


def merge_counts(parts: Sequence[str | os.PathLike], out: str | os.PathLike):
    """Sum the counts of ``f1`` worker parts (disjoint proteins of one split) into ``out``."""
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
    write_csv(layout.counts_table(out), concept_table(total))
    total.save(out)  # last, as in count_f1
    return total


def select_saes(counts: Sequence[str | os.PathLike], out: str | os.PathLike) -> list[dict]:
    """The best SAE per (model, kind, layer) by mean best F1 per concept, from counts files on
    the select split: every candidate's row (``selected`` True for the best) in ``out`` (CSV),
    with the path of its counts file relative to ``out``'s directory
    (:func:`interplm_jax.layout.read_selection` reads them back)."""
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
                         "counts": os.path.relpath(Path(cands[n][1]).resolve(), Path(out).resolve().parent),
                         "mean_best_f1": s, "selected": n == best})
    write_csv(out, rows)
    return rows


def selection_lines(rows: Sequence[dict]) -> list[str]:
    """One line per (model, kind, layer) of :func:`select_saes`'s rows: the SAE chosen."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["kind"], r["layer"]), []).append(r)
    return [f"{model} {kind} layer {layer}: {best['name']} (mean best F1 {best['mean_best_f1']:.3f} "
            f"of {len(cands)})"
            for (model, kind, layer), cands in groups.items()
            for best in [next(r for r in cands if r["selected"])]]


def heldout(runs: Sequence[tuple[str | os.PathLike, str | os.PathLike]], out: str | os.PathLike,
            cfg: ConceptsConfig) -> list[dict]:
    """Held-out report of (valid counts, test counts) pairs, one per selected SAE or baseline:
    per concept the feature chosen on valid and its test F1, the pairs above ``cfg.top_f1``,
    and ``summary.csv`` + the concepts-per-layer plot (:class:`ConceptReportFiles` of ``out``).
    Returns the summary rows."""
    from interplm_jax.concepts.f1 import ConceptCounts
    from interplm_jax.concepts.metrics import heldout_report
    from interplm_jax.concepts.report import plot_concepts_per_layer, write_csv

    files = layout.ConceptReportFiles(out)
    summary = []
    for valid_path, test_path in runs:
        valid, test = ConceptCounts.load(valid_path), ConceptCounts.load(test_path)
        rep = heldout_report(valid, test, cfg.top_f1, cfg.reference_test)
        m = valid.meta
        # model, kind, layer and the SAE's name: two SAEs of one layer get their own files
        tag = f"{m.get('model', 'model')}_{m.get('kind', 'sae')}_L{m.get('layer')}_{m.get('name')}"
        write_csv(files.per_concept(tag), rep.per_concept)
        write_csv(files.pairs(tag), rep.pairs,
                  ["concept", "feature", "valid_f1", "test_f1", "test_threshold"])
        summary.append({"model": m.get("model", "model"), "kind": m.get("kind", "sae"),
                        "layer": m.get("layer"), "name": m.get("name"), **rep.summary()})
    write_csv(files.summary, summary)
    plot_concepts_per_layer(summary, files.figure)
    return summary


def summary_line(row: dict, top_f1: float) -> str:
    """One row of :func:`heldout`'s summary in words."""
    return (f"{row['model']}_{row['kind']}_L{row['layer']}_{row['name']}: mean test F1 "
            f"{row['mean_test_f1']:.3f}; "
            f"{row['n_pairs_test']} of {row['n_pairs_valid']} pairs keep F1 > {top_f1}; "
            f"{row['n_concepts_test']} concepts")
