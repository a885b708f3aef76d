"""Small-study guards: conditions under which a study's numbers mean little, said in words.

Each function returns the warnings (strings) it finds; the bench stage logs them and writes
them beside ``bench.csv`` (``warnings.json``), and the feature browser shows them.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

#: Fewer proteins than this in the selection split: the choice of SAE is noisy.
MIN_SELECT_PROTEINS = 20


def small_selection(n_select: int, minimum: int = MIN_SELECT_PROTEINS) -> list[str]:
    if n_select < minimum:
        return [f"the selection split has {n_select} proteins (< {minimum}): the SAE chosen per "
                "layer rests on few proteins"]
    return []


def selection_ties(rows: Iterable[Mapping[str, str]]) -> list[str]:
    """Rows of ``selection.csv``: a warning per (model, kind, layer) whose best score is shared."""
    groups: dict[tuple, list[tuple[float, str]]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["kind"], r["layer"]), []).append((float(r["mean_best_f1"]), r["name"]))
    out = []
    for (model, kind, layer), cands in sorted(groups.items()):
        top = max(s for s, _ in cands)
        tied = sorted(n for s, n in cands if s == top)
        if len(tied) > 1:
            out.append(f"{model} {kind} layer {layer}: {len(tied)} SAEs tie on the selection score "
                       f"{top:.4f} ({', '.join(tied)}); the first by name was chosen")
    return out


def few_structures(n_structures: int, min_proteins: int) -> list[str]:
    if n_structures < min_proteins:
        return [f"{n_structures} proteins have structures, fewer than spatial.min_proteins = "
                f"{min_proteins}: the spatial analysis tests no feature"]
    return []


def overlap(train: Sequence[tuple[str, str]], evaluation: Sequence[tuple[str, str]]) -> list[str]:
    """(id, sequence) pairs of the training and evaluation proteins: a warning when some
    evaluation sequence is also a training sequence (the held-out numbers are not held out)."""
    seen = {seq: pid for pid, seq in train}
    shared = [(pid, seen[seq]) for pid, seq in evaluation if seq in seen]
    if not shared:
        return []
    pid, tid = shared[0]
    return [f"{len(shared)} of {len(evaluation)} evaluation proteins have the sequence of a training "
            f"protein (e.g. {pid} = training {tid}): held-out numbers are partly on training data"]


def study_warnings(layout, study, max_length: int, min_structures: int) -> list[str]:
    """Every guard on a finished study (after its ``concepts`` stage).

    Args:
      layout: its :class:`~interplm_jax.layout.StudyLayout`; study: its ``StudyConfig``;
      max_length: ``extract.max_length`` (training proteins read as extraction did);
      min_structures: ``analysis.spatial.min_proteins``.
    """
    import csv

    from interplm_jax.concepts.evalset import EvalSet
    from interplm_jax.concepts.labels import ConceptLabels
    from interplm_jax.fasta import read_fasta

    es = EvalSet.load(layout.eval_set.definition)
    out = small_selection(len(es.select))
    with open(layout.selection, newline="") as f:
        out += selection_ties(csv.DictReader(f))
    if study.structures_fasta:
        n = len(read_fasta(study.structures_fasta, max_length=10**9, on_invalid="skip")[0])
        out += few_structures(n, min_structures)
    train = read_fasta(study.train_fasta, max_length=max_length, on_invalid="skip")[0]
    labels = ConceptLabels.load(layout.labels)
    ids = [*es.valid, *es.test]
    evaluation = [(i, labels.sequence(int(p))) for i, p in zip(ids, labels.indices(ids))]
    return out + overlap([(p.id, p.sequence) for p in train], evaluation)
