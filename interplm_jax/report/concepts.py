"""Concept scores the browser shows, from a layer's concept counts (``evaluate_concepts.py f1``):
the best concepts of each feature, and the best features of each concept for the chosen SAE and
its baselines (neurons, the SAEs of the control models: shuffled weights, random init) side by side.

Both are the F1 of ``interplm_jax.concepts.metrics`` at the (concept, feature)'s best threshold on
the counts given (normally the valid split), with the test F1 at that threshold when test counts
are given: the definitions of the concept report.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterator

import numpy as np

from interplm_jax.errors import InputError
from interplm_jax.report.inputs import _round


@dataclasses.dataclass(frozen=True)
class FeatureConcepts:
    """Best concepts per feature: ``names`` (C reported concepts), per feature ``rows`` of
    ``[concept index, f1, precision, recall, threshold(, test f1)]`` by decreasing F1."""

    names: list[str]
    rows: dict[int, list[list]]
    split: str
    has_test: bool


def _load(valid: Path, test: Path | None, n_features: int | None):
    from interplm_jax.concepts.f1 import ConceptCounts
    from interplm_jax.concepts.metrics import reported

    counts = ConceptCounts.load(valid)
    tcounts = ConceptCounts.load(test) if test else None
    if tcounts is not None and (tcounts.concepts != counts.concepts
                                or tcounts.tp.shape != counts.tp.shape):
        raise InputError(f"{test}: other concepts or features than {valid}")
    if n_features is not None and counts.n_features != n_features:
        raise InputError(f"{valid}: concept counts of {counts.n_features} features, but the SAE "
                         f"has {n_features} (counts of another SAE?)")
    return counts, tcounts, np.flatnonzero(reported(counts.concepts))


def _best(counts, tcounts, keep: np.ndarray, feats: np.ndarray,
          chunk: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Per chunk of ``feats``: (features (f,), scores (C, f, 5 or 6)) with the last axis
    ``f1, precision, recall, threshold value(, test f1)``; C = the ``keep`` concepts."""
    from interplm_jax.concepts.metrics import at_thresholds, best_thresholds, scores

    for a in range(0, len(feats), chunk):
        f = feats[a:a + chunk]
        best = best_thresholds(scores(_subset(counts, keep, f)))
        cols = [best.f1, best.precision, best.recall,
                np.asarray(counts.thresholds, np.float64)[best.threshold]]
        if tcounts is not None:
            cols.append(at_thresholds(scores(_subset(tcounts, keep, f)), best.threshold).f1)
        yield f, np.stack([np.asarray(c, np.float64) for c in cols], axis=-1)


def feature_concepts(valid: Path, n_features: int, features: np.ndarray, top: int,
                     min_f1: float, test: Path | None = None, chunk: int = 512) -> FeatureConcepts:
    """The ``top`` concepts of each of ``features`` (of an SAE with ``n_features``) by F1 at
    its best threshold on the counts ``valid``, and the test F1 at that threshold when ``test``
    is given. Computed over feature chunks so that (C, F, T) score arrays stay small."""
    counts, tcounts, keep = _load(valid, test, n_features)
    rows: dict[int, list[list]] = {}
    for f, s in _best(counts, tcounts, keep, np.asarray(features, np.int64), chunk):
        order = np.argsort(-s[..., 0], axis=0, kind="stable")[:top]  # (top, f)
        for j, feat in enumerate(f):
            out = [[int(c), *s[c, j].tolist()] for c in order[:, j] if s[c, j, 0] > min_f1]
            if out:
                rows[int(feat)] = _round(out)
    return FeatureConcepts([counts.concepts[c] for c in keep], rows,
                           str(counts.meta.get("split", Path(valid).stem)), tcounts is not None)


def concept_features(valid: Path, top: int, test: Path | None = None,
                     chunk: int = 512) -> tuple[list[str], dict[int, list[list]]]:
    """The ``top`` features of highest F1 for each reported concept, over all features of the
    counts: (concept names, {concept index: [[feature, f1, precision, recall, threshold(, test
    f1)], ...]} by decreasing F1, ties by feature index). Concepts no feature scores are left out."""
    counts, tcounts, keep = _load(valid, test, None)
    best: list[np.ndarray] = []  # per chunk: (C, k, 6 or 7) candidates [feature, scores...]
    for f, s in _best(counts, tcounts, keep, np.arange(counts.n_features), chunk):
        k = min(top, len(f))
        idx = np.argsort(-s[..., 0], axis=1, kind="stable")[:, :k]  # (C, k)
        cand = np.take_along_axis(s, idx[..., None], axis=1)
        best.append(np.concatenate([f[idx][..., None].astype(np.float64), cand], axis=-1))
    rows: dict[int, list[list]] = {}
    if best:
        allc = np.concatenate(best, axis=1)  # (C, chunks * k, ...)
        order = np.lexsort((allc[..., 0], -allc[..., 1]), axis=1)[:, :top]
        for c in range(len(keep)):
            out = [[int(r[0]), *r[1:].tolist()] for r in allc[c, order[c]] if r[1] > 0]
            if out:
                rows[c] = _round(out)
    return [counts.concepts[c] for c in keep], rows


def _subset(counts, keep: np.ndarray, f: np.ndarray):
    ix = np.ix_(keep, f)
    return dataclasses.replace(
        counts, concepts=[counts.concepts[c] for c in keep], tp=counts.tp[ix],
        fp=counts.fp[ix], hits=counts.hits[ix], n_residues=counts.n_residues[keep],
        n_domains=counts.n_domains[keep], per_residue=counts.per_residue[keep])
