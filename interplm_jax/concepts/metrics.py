"""F1 from counts, best threshold per (feature, concept), best feature per concept, SAE
selection and the held-out test report (DESIGN.md section 4, Q5).

Precision = TP / (TP + FP); recall = domains hit / domains (per-domain concepts) or
TP / labelled residues (per-residue concepts); F1 = 2PR / (P + R), 0 when P + R = 0.
``f1`` below is that F1 (the reference's ``f1_per_domain``); ``f1_residue`` uses residue recall
for every concept (the reference's ``f1``) and breaks ties.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np

from interplm_jax.concepts.f1 import ConceptCounts
from interplm_jax.concepts.labels import is_reported
from interplm_jax.errors import InputError


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.broadcast_arrays(np.asarray(a, np.float64), np.asarray(b, np.float64))
    return np.divide(a, b, out=np.zeros(a.shape), where=b > 0)


def _f1(p: np.ndarray, r: np.ndarray) -> np.ndarray:
    return _div(2 * p * r, p + r)


@dataclasses.dataclass(frozen=True)
class Scores:
    """Metrics per (concept, feature, threshold), each (C, F, T) float64."""

    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    recall_residue: np.ndarray
    f1_residue: np.ndarray


def scores(counts: ConceptCounts) -> Scores:
    """Precision, recall and F1 of every (concept, feature, threshold)."""
    tp, fp = counts.tp, counts.fp
    precision = _div(tp, tp + fp)
    rec_res = _div(tp, counts.n_residues[:, None, None])
    rec_dom = _div(counts.hits, counts.n_domains[:, None, None])
    recall = np.where(counts.per_residue[:, None, None], rec_res, rec_dom)
    return Scores(precision, recall, _f1(precision, recall), rec_res, _f1(precision, rec_res))


@dataclasses.dataclass(frozen=True)
class Best:
    """Best threshold per (concept, feature): ``threshold`` index (C, F) and the metrics there."""

    threshold: np.ndarray
    f1: np.ndarray
    f1_residue: np.ndarray
    precision: np.ndarray
    recall: np.ndarray


def _take(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return np.take_along_axis(x, idx[..., None], -1)[..., 0]


def best_thresholds(s: Scores) -> Best:
    """Per (concept, feature), the threshold of highest F1; ties: higher residue F1, then the
    lowest threshold."""
    # lexicographic argmax over T: primary f1, secondary f1_residue, tertiary lowest index
    lowest = -np.broadcast_to(np.arange(s.f1.shape[-1]), s.f1.shape)
    order = np.lexsort((lowest, s.f1_residue, s.f1), axis=-1)
    idx = order[..., -1]
    return Best(idx, _take(s.f1, idx), _take(s.f1_residue, idx), _take(s.precision, idx),
                _take(s.recall, idx))


def at_thresholds(s: Scores, idx: np.ndarray) -> Best:
    """The metrics at given threshold indices (C, F) (a valid set's choice carried to test)."""
    return Best(idx, _take(s.f1, idx), _take(s.f1_residue, idx), _take(s.precision, idx),
                _take(s.recall, idx))


def best_feature_per_concept(best: Best) -> np.ndarray:
    """(C,) index of the feature with the highest F1 per concept (ties: higher residue F1, then
    the lowest feature index)."""
    F = best.f1.shape[1]
    order = np.lexsort((-np.broadcast_to(np.arange(F), best.f1.shape), best.f1_residue, best.f1), axis=-1)
    return order[:, -1]


def reported(concepts: list[str]) -> np.ndarray:
    """(C,) bool: concepts that enter reports (not ``amino_acid_*``)."""
    return np.array([is_reported(c) for c in concepts], bool)


def concept_table(counts: ConceptCounts) -> list[dict]:
    """One row per reported concept: its best feature and threshold and their metrics."""
    best = best_thresholds(scores(counts))
    feat = best_feature_per_concept(best)
    rows = []
    for c in np.flatnonzero(reported(counts.concepts)):
        f = feat[c]
        t = best.threshold[c, f]
        rows.append({"concept": counts.concepts[c], "feature": int(f),
                     "threshold": float(counts.thresholds[t]), "f1": float(best.f1[c, f]),
                     "precision": float(best.precision[c, f]), "recall": float(best.recall[c, f]),
                     "tp": int(counts.tp[c, f, t]), "fp": int(counts.fp[c, f, t]),
                     "domains_hit": int(counts.hits[c, f, t]), "n_domains": int(counts.n_domains[c]),
                     "n_residues": int(counts.n_residues[c]), "per_residue": bool(counts.per_residue[c])})
    return rows


def mean_best_f1(counts: ConceptCounts) -> float:
    """Mean over reported concepts of the best feature's F1 (the selection criterion)."""
    best = best_thresholds(scores(counts))
    keep = reported(counts.concepts)
    return float(best.f1.max(axis=1)[keep].mean()) if keep.any() else 0.0


def select_best(candidates: Mapping[str, ConceptCounts]) -> tuple[str, dict[str, float]]:
    """The candidate (e.g. the SAEs of one layer, counted on 20% of valid) with the highest
    :func:`mean_best_f1`, and every candidate's score. Ties: the first name in sorted order."""
    if not candidates:
        raise InputError("no candidates to select from")
    score = {name: mean_best_f1(c) for name, c in sorted(candidates.items())}
    best = max(score, key=lambda n: score[n])  # max keeps the first of equal scores
    return best, score


def _check_same(valid: ConceptCounts, test: ConceptCounts) -> None:
    if valid.concepts != test.concepts or valid.tp.shape != test.tp.shape \
            or not np.array_equal(valid.thresholds, test.thresholds):
        raise InputError("valid and test counts differ in concepts, features or thresholds")


@dataclasses.dataclass(frozen=True)
class HeldoutReport:
    """Held-out results of one SAE (or baseline).

    Attributes:
      per_concept: rows (concept, feature, valid threshold/F1, test threshold/F1).
      mean_test_f1: mean over reported concepts of the test F1 of the valid-chosen feature.
      n_pairs_valid: (feature, concept) pairs with valid F1 > ``top``.
      n_pairs_test: how many of those keep test F1 > ``top``.
      n_concepts_test, n_features_test: distinct concepts / features among the kept pairs.
    """

    per_concept: list[dict]
    pairs: list[dict]
    mean_test_f1: float
    n_pairs_valid: int
    n_pairs_test: int
    n_concepts_test: int
    n_features_test: int

    def summary(self) -> dict:
        return {k: getattr(self, k) for k in ("mean_test_f1", "n_pairs_valid", "n_pairs_test",
                                              "n_concepts_test", "n_features_test")}


def heldout_report(valid: ConceptCounts, test: ConceptCounts, top: float = 0.5,
                reference_test: bool = False) -> HeldoutReport:
    """Choose on valid, measure on test (DESIGN.md Q5).

    Ours: the feature per concept and each pair's threshold come from valid and are carried to
    test. ``reference_test`` reproduces the reference's ``report_metrics``: the threshold is
    re-picked on test (best test F1 of the valid-chosen pair), and concepts whose pair has no
    test true positive at any threshold are left out of the mean.
    """
    _check_same(valid, test)
    keep = reported(valid.concepts)
    vb = best_thresholds(scores(valid))
    ts = scores(test)
    tb = best_thresholds(ts) if reference_test else at_thresholds(ts, vb.threshold)
    feat = best_feature_per_concept(vb)
    rows, f1s = [], []
    for c in np.flatnonzero(keep):
        f = feat[c]
        has_tp = bool(test.tp[c, f].max() > 0)
        rows.append({"concept": valid.concepts[c], "feature": int(f),
                     "valid_threshold": float(valid.thresholds[vb.threshold[c, f]]),
                     "valid_f1": float(vb.f1[c, f]),
                     "test_threshold": float(test.thresholds[tb.threshold[c, f]]),
                     "test_f1": float(tb.f1[c, f]), "test_precision": float(tb.precision[c, f]),
                     "test_recall": float(tb.recall[c, f])})
        if has_tp or not reference_test:
            f1s.append(float(tb.f1[c, f]))
    cs, fs = np.nonzero((vb.f1 > top) & keep[:, None])
    pairs = [{"concept": valid.concepts[c], "feature": int(f), "valid_f1": float(vb.f1[c, f]),
              "test_f1": float(tb.f1[c, f]), "test_threshold": float(test.thresholds[tb.threshold[c, f]])}
             for c, f in zip(cs, fs)]
    kept = [p for p in pairs if p["test_f1"] > top]
    return HeldoutReport(rows, pairs, float(np.mean(f1s)) if f1s else 0.0, len(pairs), len(kept),
                      len({p["concept"] for p in kept}), len({p["feature"] for p in kept}))
