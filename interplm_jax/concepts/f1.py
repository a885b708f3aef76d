"""TP, FP and domains hit for every (concept, feature, threshold), streaming over proteins.

For a chunk of whole proteins with feature activations ``A`` (R, F) and labels ``L`` (R, C)
holding domain ids, at each threshold t (feature on = A > t):

- TP[c, f, t] = residues with label c and A[:, f] > t; FP[c, f, t] = on[f, t] - TP[c, f, t];
- hits[c, f, t] = domains of c with at least one residue where A[:, f] > t.

Everything comes from one sparse product. Each active entry of A gets its *level* (how many
thresholds it exceeds), giving a sparse 0/1 matrix E (R, F*T) with one column per (feature,
level); with D (K, R) the membership of the chunk's K domains (one per concept and domain id),
``P = D @ E`` counts, per domain, the residues at each (feature, level). TP per level is P
summed over the domains of a concept; a domain is hit at threshold t when its highest level
exceeds t; a reverse cumulative sum over levels gives the counts at each threshold. The cost
follows the number of active (residue, feature) entries times the labels per residue; memory is
three (C, F, T) int64 accumulators plus one chunk. No Python loop over features, concepts,
thresholds or residues.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from scipy import sparse

from interplm_jax.concepts.npz import open_npz, save_npz
from interplm_jax.errors import InputError

DEFAULT_THRESHOLDS = (0.0, 0.15, 0.5, 0.6, 0.8)
FORMAT = "interplm-jax-concept-counts"


def check_thresholds(thresholds: Sequence[float]) -> np.ndarray:
    """Thresholds as a sorted float32 array; InputError unless non-negative and distinct."""
    thr = np.asarray(thresholds, np.float64)
    if thr.ndim != 1 or len(thr) == 0:
        raise InputError(f"thresholds: expected a non-empty list, got {thresholds!r}")
    if (thr < 0).any() or len(np.unique(thr)) != len(thr) or (np.diff(thr) < 0).any():
        raise InputError(f"thresholds: need distinct values >= 0 in increasing order, got {list(thresholds)}")
    return thr.astype(np.float32)


@dataclasses.dataclass
class ConceptCounts:
    """Counts over one set of proteins.

    Attributes:
      concepts: (C,) names. thresholds: (T,) float32, increasing.
      tp, fp, hits: (C, F, T) int64 (see the module docstring).
      n_residues, n_domains: (C,) int64 labelled residues and distinct domains in the set.
      per_residue: (C,) bool: recall per residue (else per domain).
      n_proteins, n_tokens: size of the set. meta: provenance (SAE, layer, split, ...).
    """

    concepts: list[str]
    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    hits: np.ndarray
    n_residues: np.ndarray
    n_domains: np.ndarray
    per_residue: np.ndarray
    n_proteins: int = 0
    n_tokens: int = 0
    meta: dict = dataclasses.field(default_factory=dict)

    @property
    def n_features(self) -> int:
        return self.tp.shape[1]

    def __add__(self, other: "ConceptCounts") -> "ConceptCounts":
        """Counts of the union of two disjoint protein sets (e.g. two shards of one split)."""
        if other.concepts != self.concepts or not np.array_equal(other.thresholds, self.thresholds) \
                or other.tp.shape != self.tp.shape:
            raise InputError("cannot add concept counts with different concepts, thresholds or features")
        meta = {k: v for k, v in self.meta.items() if k != "worker"}
        return dataclasses.replace(
            self, meta=meta, tp=self.tp + other.tp, fp=self.fp + other.fp, hits=self.hits + other.hits,
            n_residues=self.n_residues + other.n_residues, n_domains=self.n_domains + other.n_domains,
            n_proteins=self.n_proteins + other.n_proteins, n_tokens=self.n_tokens + other.n_tokens)

    def save(self, path: str | os.PathLike) -> Path:
        return save_npz(path, FORMAT, concepts=np.array(self.concepts), thresholds=self.thresholds,
                        tp=self.tp, fp=self.fp, hits=self.hits, n_residues=self.n_residues,
                        n_domains=self.n_domains, per_residue=self.per_residue,
                        n_proteins=self.n_proteins, n_tokens=self.n_tokens,
                        meta=np.array(json.dumps(self.meta, sort_keys=True)))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ConceptCounts":
        with open_npz(path, FORMAT, "concept counts", "made by `evaluate_concepts.py f1`") as z:
            return cls([str(c) for c in z["concepts"]], z["thresholds"], z["tp"], z["fp"], z["hits"],
                       z["n_residues"], z["n_domains"], z["per_residue"], int(z["n_proteins"]),
                       int(z["n_tokens"]), json.loads(str(z["meta"])))


class CountAccumulator:
    """Accumulates per-level counts chunk by chunk; :meth:`result` turns them into counts per
    threshold. ``per_residue`` (C,) marks concepts with residue-level recall, for which domain
    hits are not counted (left 0, as in the reference). State is plain arrays (:meth:`state` /
    :meth:`load_state`) for checkpoints."""

    def __init__(self, n_features: int, n_concepts: int, thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                 per_residue: Sequence[bool] | None = None):
        self.thresholds = check_thresholds(thresholds)
        self.per_residue = (np.zeros(n_concepts, bool) if per_residue is None
                            else np.asarray(per_residue, bool))
        self.F, self.C, self.T = int(n_features), int(n_concepts), len(self.thresholds)
        shape = (self.C, self.F * self.T)
        self.tp_lvl = np.zeros(shape, np.int64)
        self.hit_lvl = np.zeros(shape, np.int64)
        self.on_lvl = np.zeros(self.F * self.T, np.int64)
        self.n_residues = np.zeros(self.C, np.int64)
        self.n_domains = np.zeros(self.C, np.int64)
        self.n_tokens = 0
        self.n_proteins = 0

    def levels(self, acts) -> sparse.csr_matrix:
        """(R, F) activations -> (R, F*T) 0/1 CSR, column ``f*T + level - 1`` for entries above
        the lowest threshold (level = number of thresholds strictly below the value)."""
        if sparse.issparse(acts):
            a = acts.tocsr(copy=True)
            a.sum_duplicates()
            keep = a.data > self.thresholds[0]
            rows = np.repeat(np.arange(a.shape[0]), np.diff(a.indptr))[keep]
            cols, vals = a.indices[keep].astype(np.int64), a.data[keep].astype(np.float32, copy=False)
        else:
            acts = np.ascontiguousarray(acts, np.float32)
            # flat indices of a boolean mask: much faster than 2-D nonzero on floats
            idx = np.flatnonzero(acts > self.thresholds[0])
            rows, cols = np.divmod(idx, acts.shape[1])
            vals = acts.reshape(-1)[idx]
        lev = np.searchsorted(self.thresholds, vals, side="left")  # >= 1 here
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=acts.shape[0]))])
        return sparse.csr_matrix((np.ones(len(rows), np.int32), cols * self.T + lev - 1, indptr),
                                 shape=(acts.shape[0], self.F * self.T))

    def update(self, acts, labels: sparse.spmatrix, n_proteins: int = 0) -> None:
        """Add one chunk of whole proteins.

        Args:
          acts: (R, F) feature activations (NumPy/JAX array or SciPy sparse), normalized or not
            as the caller decides; thresholds apply to these values.
          labels: (R, C) sparse domain ids (0 = no label); a domain must not cross chunks.
        """
        if acts.ndim != 2 or acts.shape[1] != self.F:
            raise InputError(f"activations have shape {acts.shape}, expected (residues, {self.F})")
        if labels.shape != (acts.shape[0], self.C):
            raise InputError(f"labels have shape {labels.shape}, expected ({acts.shape[0]}, {self.C})")
        E = self.levels(acts)
        lab = labels.tocoo()
        nz = lab.data != 0
        r, c, ids = lab.row[nz], lab.col[nz].astype(np.int64), lab.data[nz].astype(np.int64)
        self.on_lvl += np.bincount(E.indices, minlength=self.F * self.T)
        self.n_residues += np.bincount(c, minlength=self.C)
        self.n_tokens += acts.shape[0]
        self.n_proteins += n_proteins
        if len(r) == 0:
            return
        # TP per (concept, feature, level): binary labels (C, R) @ E (R, F*T)
        Lbin = sparse.csr_matrix((np.ones(len(r), np.int32), (c, r)), shape=(self.C, acts.shape[0]))
        self.tp_lvl += (Lbin @ E).toarray()  # nearly dense once F*T columns meet C concepts
        # domains: one row per (concept, domain id) of the chunk
        base = int(ids.max()) + 1
        uniq, k = np.unique(c * base + ids, return_inverse=True)
        concept_of = uniq // base                                     # (K,)
        self.n_domains += np.bincount(concept_of, minlength=self.C)
        dom = ~self.per_residue[c]           # per-residue concepts need no domain hits
        if not dom.any():
            return
        kd, kmap = np.unique(k.ravel()[dom], return_inverse=True)     # domain-level rows only
        D = sparse.csr_matrix((np.ones(int(dom.sum()), np.int32), (kmap.ravel(), r[dom])),
                              shape=(len(kd), acts.shape[0]))
        P = D @ E                            # (K', F*T) residues of domain k at (feature, level)
        pk = np.repeat(np.arange(P.shape[0]), np.diff(P.indptr))
        feat, lvl = np.divmod(P.indices, self.T)
        # highest level per (domain, feature); (domain, feature, level) entries are unique, so
        # exactly one entry per (domain, feature) carries its maximum
        key = pk * self.F + feat
        top = np.zeros(P.shape[0] * self.F, np.int8)
        np.maximum.at(top, key, (lvl + 1).astype(np.int8))
        is_top = top[key] == lvl + 1
        flat = concept_of[kd[pk[is_top]]] * (self.F * self.T) + P.indices[is_top]
        np.add.at(self.hit_lvl.reshape(-1), flat, 1)

    def result(self, concepts: Sequence[str], meta: dict | None = None) -> ConceptCounts:
        """Counts at each threshold (reverse cumulative sums over levels)."""
        def at_threshold(x):
            x = x.reshape(*x.shape[:-1], self.F, self.T)
            return np.flip(np.cumsum(np.flip(x, -1), -1), -1)

        tp = at_threshold(self.tp_lvl)
        on = at_threshold(self.on_lvl)
        return ConceptCounts(list(concepts), self.thresholds.copy(), tp, on[None] - tp,
                             at_threshold(self.hit_lvl), self.n_residues.copy(), self.n_domains.copy(),
                             self.per_residue.copy(), self.n_proteins, self.n_tokens, dict(meta or {}))

    def state(self) -> dict[str, np.ndarray]:
        return {"tp_lvl": self.tp_lvl, "hit_lvl": self.hit_lvl, "on_lvl": self.on_lvl,
                "n_residues": self.n_residues, "n_domains": self.n_domains,
                "n_tokens": np.array(self.n_tokens), "n_proteins": np.array(self.n_proteins)}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        for k in ("tp_lvl", "hit_lvl", "on_lvl", "n_residues", "n_domains"):
            if state[k].shape != getattr(self, k).shape:
                raise InputError(f"checkpoint array {k} has shape {state[k].shape}, expected "
                                 f"{getattr(self, k).shape}")
            setattr(self, k, np.array(state[k], np.int64))
        self.n_tokens, self.n_proteins = int(state["n_tokens"]), int(state["n_proteins"])


def count_chunks(chunks: Iterable[tuple[np.ndarray, sparse.spmatrix]], n_features: int,
                 concepts: Sequence[str], per_residue: np.ndarray,
                 thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> ConceptCounts:
    """Counts over an iterable of ``(acts (R, F), labels (R, C))`` chunks of whole proteins."""
    acc = CountAccumulator(n_features, len(concepts), thresholds, per_residue)
    for acts, labels in chunks:
        acc.update(acts, labels)
    return acc.result(concepts)
