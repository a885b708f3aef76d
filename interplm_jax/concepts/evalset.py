"""The evaluation set: seeded sample of proteins, valid/test split, the selection subset of
valid, and the concepts kept for evaluation (DESIGN.md Q3, Q4).

Ours (the paper): a seeded protein-level split into halves; a concept is kept when it has more
than ``min_domains`` domains or more than ``min_residues`` labelled residues in *valid*
(10 / 1,500). The reference counts over valid + test with 25 domains: ``count_on="valid+test"``
and ``min_domains=25`` reproduce it. Catch-all concepts (Region_any, ...) are never kept.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Collection, Literal, Sequence

import numpy as np

from interplm_jax.atomic import atomic_write
from interplm_jax.concepts.labels import ConceptLabels, is_reported
from interplm_jax.errors import InputError

log = logging.getLogger(__name__)

#: Catch-all concepts the reference leaves out of evaluations (concept_constants.py).
EXCLUDED = ("Region_any", "Modified residue_any", "Domain_any", "Compositional bias_any", "Motif_any")
FORMAT = "interplm-jax-eval-set"
CountOn = Literal["valid", "valid+test"]


@dataclasses.dataclass(frozen=True)
class EvalSet:
    """Protein ids per split and the kept concepts.

    Attributes:
      valid, test: accessions; select: the subset of valid used to choose SAEs.
      concepts: kept concept names (in label order). counts: split -> {"residues", "domains"}
        per kept concept. meta: the options that made it and the number of concepts kept.
    """

    valid: tuple[str, ...]
    test: tuple[str, ...]
    select: tuple[str, ...]
    concepts: tuple[str, ...]
    counts: dict
    meta: dict

    def split(self, name: str) -> tuple[str, ...]:
        if name not in ("valid", "test", "select"):
            raise InputError(f"unknown split {name!r}; expected valid, test or select")
        return getattr(self, name)

    def save(self, path: str | os.PathLike) -> Path:
        data = {"format": FORMAT, **{k: list(getattr(self, k)) for k in
                                     ("valid", "test", "select", "concepts")},
                "counts": self.counts, "meta": self.meta}
        return atomic_write(path, json.dumps(data, indent=1))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "EvalSet":
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise InputError(f"{path}: cannot read the evaluation set ({e})") from None
        if data.get("format") != FORMAT:
            raise InputError(f"{path}: not an evaluation-set file (made by `evaluate_concepts.py split`)")
        return cls(*(tuple(data[k]) for k in ("valid", "test", "select", "concepts")),
                   data["counts"], data["meta"])


def sample_and_split(ids: Sequence[str], lengths: np.ndarray, n_proteins: int | None,
                     max_length: int, seed: int, valid_fraction: float = 0.5,
                     select_fraction: float = 0.2,
                     prefer: Collection[str] = ()) -> tuple[list[str], list[str], list[str]]:
    """Seeded sample of ``n_proteins`` (all when None) of at most ``max_length`` residues,
    shuffled and cut into valid / test; ``select`` = the first ``select_fraction`` of valid.
    Each list is returned in the input order.

    ``prefer``: ids sampled first (e.g. the proteins with a structure, so that the feature
    browser can show them in 3-D; the paper's evaluation set requires AlphaFold structures),
    then the others; the sample is shuffled again before the split, so that the preferred
    proteins fall into valid and test alike. Without ``prefer`` the sample is the same as before.
    """
    pool = np.flatnonzero(np.asarray(lengths) <= max_length)
    n = len(pool) if n_proteins is None else int(n_proteins)
    if n > len(pool):
        raise InputError(f"cannot sample {n} proteins: {len(pool)} have <= {max_length} residues")
    if n < 2:
        raise InputError(f"need at least 2 proteins for a valid/test split, got {n}")
    if not 0 < valid_fraction < 1 or not 0 < select_fraction <= 1:
        raise InputError(f"valid_fraction must be in (0, 1) and select_fraction in (0, 1], got "
                         f"{valid_fraction}, {select_fraction}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(pool)
    if prefer:
        first = np.array([ids[i] in prefer for i in order], bool)
        order = rng.permutation(np.concatenate([order[first], order[~first]])[:n])
    picked = order[:n]
    n_valid = int(round(n * valid_fraction))
    valid, test = picked[:n_valid], picked[n_valid:]
    select = valid[:max(1, int(round(n_valid * select_fraction)))]
    return ([ids[i] for i in np.sort(valid)], [ids[i] for i in np.sort(test)],
            [ids[i] for i in np.sort(select)])


def keep_concepts(names: Sequence[str], residues: np.ndarray, domains: np.ndarray,
                  min_domains: int = 10, min_residues: int = 1500,
                  excluded: Sequence[str] = EXCLUDED) -> np.ndarray:
    """Indices of concepts with ``domains > min_domains`` or ``residues > min_residues``, minus
    ``excluded`` (strict inequalities, as the paper and the reference)."""
    ok = (np.asarray(domains) > min_domains) | (np.asarray(residues) > min_residues)
    ok &= np.array([n not in excluded for n in names], bool)
    return np.flatnonzero(ok)


def make_eval_set(labels: ConceptLabels, n_proteins: int | None = None, seed: int = 0,
                  max_length: int = 1022, valid_fraction: float = 0.5, select_fraction: float = 0.2,
                  min_domains: int = 10, min_residues: int = 1500, count_on: CountOn = "valid",
                  excluded: Sequence[str] = EXCLUDED, prefer: Collection[str] = ()) -> EvalSet:
    """Sample, split and filter concepts (see the module docstring); ``prefer``: ids sampled
    first (:func:`sample_and_split`)."""
    if count_on not in ("valid", "valid+test"):
        raise InputError(f"count_on must be 'valid' or 'valid+test', got {count_on!r}")
    valid, test, select = sample_and_split(labels.protein_ids, labels.lengths, n_proteins,
                                           max_length, seed, valid_fraction, select_fraction,
                                           frozenset(prefer))
    per_split = {name: labels.counts(labels.indices(ids)) for name, ids in
                 (("valid", valid), ("test", test), ("select", select))}
    res, dom = per_split["valid"]
    if count_on == "valid+test":
        res, dom = res + per_split["test"][0], dom + per_split["test"][1]
    kept = keep_concepts(labels.concepts, res, dom, min_domains, min_residues, excluded)
    names = [labels.concepts[i] for i in kept]
    n_reported = sum(is_reported(n) for n in names)
    log.info("kept %d concepts (%d reported, amino acids aside) of %d: > %d domains or > %d "
             "residues in %s", len(kept), n_reported, labels.n_concepts, min_domains,
             min_residues, count_on)
    counts = {name: {"residues": r[kept].tolist(), "domains": d[kept].tolist()}
              for name, (r, d) in per_split.items()}
    meta = {"n_proteins": len(valid) + len(test), "seed": seed, "max_length": max_length,
            "valid_fraction": valid_fraction, "select_fraction": select_fraction,
            "min_domains": min_domains, "min_residues": min_residues, "count_on": count_on,
            "excluded": list(excluded), "n_concepts_total": labels.n_concepts,
            "n_concepts_kept": len(kept), "n_concepts_kept_reported": n_reported}
    if prefer:
        meta["n_preferred"] = len(frozenset(prefer) & (set(valid) | set(test)))
    return EvalSet(tuple(valid), tuple(test), tuple(select), tuple(names), counts, meta)
