"""The causal test's inputs and statistics (the interventions themselves: ``torch_bridge/causal.py``).

For each concept, the feature its valid F1 chose in the chosen SAE of a layer (the concept
report's ``per_concept`` table) is intervened on at the concept's annotated residues of test
proteins -- zeroed, and separately clamped to its maximum over the normalization set -- and the
change in the protein LM's log-probability of the true residue there is measured (unmasked
input, as ``torch_bridge/fidelity.py`` scores by default). The same interventions on
``null_size`` random live features of similar activation frequency form the null:

    delta   = mean over the annotated residues of (log p_edited - log p_clean)(true residue)
    z       = (delta - mean(null deltas)) / std(null deltas)   (NaN when the null has no spread)
    p       = (1 + #{null: |delta_null| >= |delta|}) / (1 + null_size)
    q       = Benjamini-Hochberg over every row of one table, per intervention

Frequencies and maxima come from the SAE's ``feature_stats/`` (written by normalization).
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from interplm_jax import paths
from interplm_jax.concepts.labels import is_reported
from interplm_jax.concepts.report import write_csv
from interplm_jax.config import option
from interplm_jax.errors import InputError
from interplm_jax.normalize import FeatureStats, read_feature_stats

#: The interventions: the feature set to 0, or to its maximum over the normalization set.
OPS = ("zero", "clamp")
#: The null features are drawn from the live features closest in log activation frequency:
#: this many times ``null_size`` of them.
POOL_FACTOR = 4
KEYS = ("model", "layer", "sae", "concept", "feature", "valid_f1", "test_f1", "freq", "act_mean",
        "n_proteins", "n_residues", "null_size", "null_freq_min", "null_freq_max", "logp_clean")
COLUMNS = KEYS + tuple(f"{k}_{op}" for op in OPS for k in ("delta", "null_mean", "null_std", "z", "p", "q"))


@dataclasses.dataclass(frozen=True)
class CausalConfig:
    """The ``causal:`` section of a study config (also the options of ``bench.py causal``)."""

    layers: tuple[int, ...] | None = option(None, "Layers tested in a study (null: every trained layer).")
    max_concepts: int | None = option(20, "Concepts tested per layer (the highest valid F1 first); null: all.")
    min_valid_f1: float = option(0.5, "Only concepts whose chosen feature has a valid F1 above this.")
    max_proteins: int | None = option(20, "Test proteins per concept (those annotated with it, in split order); null: all.")
    null_size: int = option(32, "Random live features of similar activation frequency per concept (the null).")
    seed: int = option(0, "Seed of the null features.")
    batch_size: int = option(8, "Proteins per clean forward pass.")
    batch_rows: int = option(64, "Sequences (protein x intervention) per intervened forward pass.")

    def __post_init__(self):
        if min(self.null_size, self.batch_size, self.batch_rows) < 1 or any(
                v is not None and v < 1 for v in (self.max_concepts, self.max_proteins)):
            raise ValueError("max_concepts, max_proteins, null_size, batch_size and batch_rows must be positive")


class NoChosenPairs(InputError):
    """A concept report with no (concept, feature) pair to test."""


@dataclasses.dataclass(frozen=True)
class ChosenPair:
    """A concept and the feature chosen for it on valid (with its valid and test F1)."""

    concept: str
    feature: int
    valid_f1: float
    test_f1: float


@dataclasses.dataclass(frozen=True)
class Site:
    """A test protein and the 0-based residue positions annotated with a concept."""

    protein: str
    sequence: str
    positions: np.ndarray


def read_pairs(path: str | os.PathLike, min_valid_f1: float = 0.5,
               max_concepts: int | None = None) -> list[ChosenPair]:
    """The valid-chosen (concept, feature) pairs of a ``per_concept_<tag>.csv`` (the concept
    report, ``evaluate_concepts.py report``) with valid F1 > ``min_valid_f1``, the highest first,
    at most ``max_concepts``.

    Raises:
      InputError if the file is missing or not such a table; :class:`NoChosenPairs` if no pair
      passes.
    """
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        pairs = [ChosenPair(r["concept"], int(r["feature"]), float(r["valid_f1"]), float(r["test_f1"]))
                 for r in rows]
    except FileNotFoundError:
        raise InputError(f"{path}: not found (a per_concept table of evaluate_concepts.py report)") from None
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{path}: not a per_concept table (columns concept, feature, valid_f1, test_f1)") from None
    kept = sorted((p for p in pairs if p.valid_f1 > min_valid_f1 and is_reported(p.concept)),
                  key=lambda p: (-p.valid_f1, p.concept))[:max_concepts]
    if not kept:
        raise NoChosenPairs(f"{path}: no chosen pairs to test: none of its {len(pairs)} concept(s) has a "
                         f"feature with valid F1 > {min_valid_f1} (min_valid_f1)")
    return kept


def concept_sites(labels, eval_set, concepts: Sequence[str], max_proteins: int | None = None) -> dict[str, list[Site]]:
    """Per concept, the test proteins annotated with it (split order, at most ``max_proteins``)
    and their annotated residue positions.

    Raises:
      InputError for a concept the labels do not have.
    """
    unknown = [c for c in concepts if c not in labels.concepts]
    if unknown:
        raise InputError(f"concept(s) {unknown[:3]} are not in the labels ({len(labels.concepts)} concepts)")
    proteins = labels.indices(eval_set.test)
    cols = np.array([labels.concepts.index(c) for c in concepts], np.int64)
    m = labels.matrix(proteins, cols).tocsc()  # (residues of test, concepts)
    starts = np.concatenate([[0], np.cumsum(labels.lengths[proteins])])
    out = {}
    for j, c in enumerate(concepts):
        rows = m.indices[m.indptr[j]:m.indptr[j + 1]]
        owner = np.searchsorted(starts, rows, side="right") - 1
        sites = [Site(eval_set.test[i], labels.sequence(int(proteins[i])),
                      np.sort(rows[owner == i] - starts[i]))
                 for i in np.unique(owner)]  # split order: owner indexes eval_set.test
        out[c] = sites[:max_proteins]
    return out


def frequencies(stats: FeatureStats) -> np.ndarray:
    """(F,) fraction of the normalization set's tokens on which each feature fired."""
    return stats.n_active / max(stats.n_tokens, 1)


def null_features(freq: np.ndarray, live: np.ndarray, feature: int, size: int,
                  rng: np.random.Generator) -> np.ndarray:
    """``size`` live features (fewer if fewer exist) drawn at random from the ``POOL_FACTOR *
    size`` live features closest to ``feature`` in log activation frequency (``feature``
    excluded). freq, live: (F,); returns sorted feature indices."""
    cand = np.flatnonzero(live)
    cand = cand[cand != feature]
    with np.errstate(divide="ignore"):
        dist = np.abs(np.log(freq[cand]) - np.log(max(freq[feature], 1e-12)))
    pool = cand[np.argsort(dist, kind="stable")[:POOL_FACTOR * size]]
    return np.sort(rng.choice(pool, size=min(size, len(pool)), replace=False))


def permutation_p(delta: float, null: np.ndarray) -> float:
    """(1 + #{j: |null_j| >= |delta|}) / (1 + len(null)): how often a null feature moves the
    log-probability at least as much (the +1 counts the tested feature itself)."""
    null = np.asarray(null, np.float64)
    return float((1 + np.sum(np.abs(null) >= abs(delta))) / (1 + len(null)))


def standardized(delta: float, null: np.ndarray) -> float:
    """(delta - mean(null)) / std(null) (ddof 1); NaN when the null has no spread."""
    null = np.asarray(null, np.float64)
    sd = float(np.std(null, ddof=1)) if len(null) > 1 else 0.0
    return (float(delta) - float(np.mean(null))) / sd if sd > 0 else math.nan


def bh_qvalues(p: Sequence[float]) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (``scipy.stats.false_discovery_control``)."""
    from scipy.stats import false_discovery_control

    p = np.asarray(p, np.float64)
    return false_discovery_control(p, method="bh") if len(p) else p


def effect_columns(op: str, delta: float, null: np.ndarray) -> dict:
    """The table's columns of one intervention (q filled in by :func:`with_qvalues`)."""
    null = np.asarray(null, np.float64)
    return {f"delta_{op}": float(delta), f"null_mean_{op}": float(np.mean(null)),
            f"null_std_{op}": float(np.std(null, ddof=1)) if len(null) > 1 else math.nan,
            f"z_{op}": standardized(delta, null), f"p_{op}": permutation_p(delta, null), f"q_{op}": math.nan}


def with_qvalues(rows: Sequence[dict]) -> list[dict]:
    """Rows with ``q_<op>``: Benjamini-Hochberg over all rows, per intervention."""
    rows = [dict(r) for r in rows]
    for op in OPS:
        for r, q in zip(rows, bh_qvalues([r[f"p_{op}"] for r in rows])):
            r[f"q_{op}"] = float(q)
    return rows


def write_causal(path: str | os.PathLike, rows: Sequence[dict]) -> Path:
    """The table (``causal.csv`` or a part) with q-values over its rows, written atomically."""
    return write_csv(path, with_qvalues(rows), COLUMNS)


def read_causal(path: str | os.PathLike) -> list[dict]:
    """Rows of a causal table, numbers as numbers."""
    text = {"model", "sae", "concept"}
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        return [{k: r[k] if k in text else int(r[k]) if k in ("layer", "feature", "n_proteins", "n_residues",
                                                               "null_size") else float(r[k]) for k in COLUMNS}
                for r in rows]
    except FileNotFoundError:
        raise InputError(f"{path}: not found (a table of bench.py causal)") from None
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{path}: not a causal table (columns {', '.join(COLUMNS[:5])}, ...)") from None


def sae_stats(sae_dir: str | os.PathLike) -> FeatureStats:
    """The normalization statistics of an SAE directory (maxima: the clamp values)."""
    return read_feature_stats(paths.as_path(sae_dir))
