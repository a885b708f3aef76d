"""Per-residue concept labels with one domain id per annotation occurrence, stored as intervals.

A :class:`ConceptLabels` keeps, for every protein, its residues and a table of intervals
``(protein, concept, domain, start, stop)``: compact (one row per occurrence and concept, not
per residue), and expanded on demand into a sparse residues x concepts matrix whose values are
domain ids (0 = no label), the layout the reference's ``aa_concepts.npz`` has. Domain ids are
unique within a concept across the whole set, so they stay valid in any subset. Where two
occurrences of one concept overlap, the later one's id wins on the shared residues (as in the
reference). ``amino_acid_<X>`` concepts come from the sequence (each residue its own domain).
"""

from __future__ import annotations

import array
import collections
import dataclasses
import logging
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from scipy import sparse

from interplm_jax.concepts.uniprot import COLUMNS, UniProtRow
from interplm_jax.concepts.npz import open_npz, save_npz
from interplm_jax.errors import InputError

log = logging.getLogger(__name__)

AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
#: Concept name parts whose recall is per residue, not per domain (the reference's list).
PER_RESIDUE = ("Active site", "Cofactor", "Glycosylation", "Modified residue", "amino_acid",
               "Disulfide bond")
#: Concept name parts never reported (single tokens, not biology).
NOT_REPORTED = ("amino_acid",)
FORMAT = "interplm-jax-concept-labels"


def is_per_residue(name: str) -> bool:
    """Recall per residue for ``name`` (substring match on :data:`PER_RESIDUE`, as the reference)."""
    return any(p in name for p in PER_RESIDUE)


def is_reported(name: str) -> bool:
    return not any(p.lower() in name.lower() for p in NOT_REPORTED)


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + c)`` for each (s, c), vectorized."""
    counts = counts.astype(np.int64)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    ends = np.cumsum(counts)
    return np.repeat(starts.astype(np.int64) - (ends - counts), counts) + np.arange(total)


@dataclasses.dataclass
class ConceptLabels:
    """Concept labels of a set of proteins.

    Attributes:
      protein_ids: (P,) accessions. residues: (N,) uint8 residue letters, proteins concatenated.
      offsets: (P+1,) int64: protein p's residues are ``residues[offsets[p]:offsets[p+1]]``.
      concepts: (C,) concept names, amino-acid concepts last when present.
      iv_protein, iv_concept, iv_start, iv_stop: (M,) int32 intervals (0-based, half-open),
        sorted by protein, in annotation order within a protein.
      iv_domain: (M,) int64 domain id (>= 1), unique within its concept.
      amino_acids: whether ``amino_acid_<X>`` concepts are present (derived from residues).
      meta: provenance and the parse report.
    """

    protein_ids: list[str]
    residues: np.ndarray
    offsets: np.ndarray
    concepts: list[str]
    iv_protein: np.ndarray
    iv_concept: np.ndarray
    iv_domain: np.ndarray
    iv_start: np.ndarray
    iv_stop: np.ndarray
    amino_acids: bool = True
    meta: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        self._iv_offsets = np.searchsorted(self.iv_protein, np.arange(self.n_proteins + 1))
        self._index = {pid: i for i, pid in enumerate(self.protein_ids)}
        self._aa_lookup = np.full(256, -1, np.int64)
        if self.amino_acids:
            first = self.concepts.index("amino_acid_Other") - len(AMINO_ACIDS)
            self._aa_lookup[:] = first + len(AMINO_ACIDS)
            for i, a in enumerate(AMINO_ACIDS):
                self._aa_lookup[ord(a)] = first + i

    @property
    def n_proteins(self) -> int:
        return len(self.protein_ids)

    @property
    def n_concepts(self) -> int:
        return len(self.concepts)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def sequence(self, p: int) -> str:
        return self.residues[self.offsets[p]:self.offsets[p + 1]].tobytes().decode()

    def indices(self, ids: Iterable[str]) -> np.ndarray:
        """Protein indices of accessions; InputError naming the first unknown one."""
        out = []
        for pid in ids:
            if pid not in self._index:
                raise InputError(f"protein {pid!r} has no concept labels")
            out.append(self._index[pid])
        return np.asarray(out, np.int64)

    def per_residue(self) -> np.ndarray:
        """(C,) bool: concepts whose recall is per residue."""
        return np.array([is_per_residue(c) for c in self.concepts], bool)

    def matrix(self, proteins: np.ndarray, concepts: np.ndarray | None = None) -> sparse.csr_matrix:
        """Residues of ``proteins`` (concatenated in that order) x ``concepts`` (default all),
        int64 domain ids, 0 where unlabelled. Shape (sum of lengths, len(concepts))."""
        proteins = np.asarray(proteins, np.int64)
        lengths = self.lengths[proteins]
        row_off = np.concatenate([[0], np.cumsum(lengths)])
        n_rows = int(row_off[-1])
        lo, hi = self._iv_offsets[proteins], self._iv_offsets[proteins + 1]
        iv = _ranges(lo, hi - lo)
        local = np.repeat(np.arange(len(proteins)), hi - lo)
        span = (self.iv_stop[iv] - self.iv_start[iv]).astype(np.int64)
        rows = _ranges(self.iv_start[iv].astype(np.int64) + row_off[local], span)
        cols = np.repeat(self.iv_concept[iv].astype(np.int64), span)
        vals = np.repeat(self.iv_domain[iv], span)
        if self.amino_acids:
            res = _ranges(self.offsets[proteins], lengths)
            aa_cols = self._aa_lookup[self.residues[res]]
            rows = np.concatenate([rows, np.arange(n_rows)])
            cols = np.concatenate([cols, aa_cols])
            vals = np.concatenate([vals, res + 1])
        n_cols = self.n_concepts
        if concepts is not None:
            lookup = np.full(self.n_concepts, -1, np.int64)
            lookup[np.asarray(concepts, np.int64)] = np.arange(len(concepts))
            cols = lookup[cols]
            keep = cols >= 0
            rows, cols, vals = rows[keep], cols[keep], vals[keep]
            n_cols = len(concepts)
        # later occurrences win where one concept's occurrences overlap
        key = rows * n_cols + cols
        _, last = np.unique(key[::-1], return_index=True)
        pick = len(key) - 1 - last
        return sparse.csr_matrix((vals[pick], (rows[pick], cols[pick])), shape=(n_rows, n_cols))

    def counts(self, proteins: np.ndarray, concepts: np.ndarray | None = None,
               chunk_residues: int = 1 << 20) -> tuple[np.ndarray, np.ndarray]:
        """(residues, domains) per concept over ``proteins``: labelled residues and distinct
        domain ids, each (C,) int64 (C = len(concepts) or all)."""
        proteins = np.asarray(proteins, np.int64)
        n_cols = self.n_concepts if concepts is None else len(concepts)
        n_res, n_dom = np.zeros(n_cols, np.int64), np.zeros(n_cols, np.int64)
        for chunk in protein_chunks(self.lengths[proteins], chunk_residues):
            m = self.matrix(proteins[chunk], concepts).tocoo()
            n_res += np.bincount(m.col, minlength=n_cols)
            n_dom += domain_counts(m.col, m.data, n_cols)
        return n_res, n_dom

    def subset(self, proteins: Sequence[int]) -> "ConceptLabels":
        """The labels of ``proteins`` only, in that order (domain ids kept)."""
        proteins = np.asarray(proteins, np.int64)
        lengths = self.lengths[proteins]
        res = _ranges(self.offsets[proteins], lengths)
        lo, hi = self._iv_offsets[proteins], self._iv_offsets[proteins + 1]
        iv = _ranges(lo, hi - lo)
        return ConceptLabels(
            [self.protein_ids[p] for p in proteins], self.residues[res],
            np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), list(self.concepts),
            np.repeat(np.arange(len(proteins), dtype=np.int32), hi - lo), self.iv_concept[iv],
            self.iv_domain[iv], self.iv_start[iv], self.iv_stop[iv], self.amino_acids, dict(self.meta))

    def save(self, path: str | os.PathLike) -> Path:
        """Write one ``.npz`` file atomically."""
        return save_npz(
            path, FORMAT, protein_ids=np.array(self.protein_ids),
            residues=self.residues, offsets=self.offsets, concepts=np.array(self.concepts),
            iv_protein=self.iv_protein, iv_concept=self.iv_concept, iv_domain=self.iv_domain,
            iv_start=self.iv_start, iv_stop=self.iv_stop, amino_acids=np.array(self.amino_acids),
            meta=np.array(_json_dumps(self.meta)))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ConceptLabels":
        import json

        with open_npz(path, FORMAT, "concept labels", "run `evaluate_concepts.py labels`") as z:
            return cls([str(s) for s in z["protein_ids"]], z["residues"], z["offsets"],
                       [str(s) for s in z["concepts"]], z["iv_protein"], z["iv_concept"],
                       z["iv_domain"], z["iv_start"], z["iv_stop"], bool(z["amino_acids"]),
                       json.loads(str(z["meta"])))


def _json_dumps(obj) -> str:
    import json

    return json.dumps(obj, sort_keys=True)


def domain_counts(cols: np.ndarray, ids: np.ndarray, n_cols: int) -> np.ndarray:
    """Distinct nonzero ids per column, from COO column indices and values. (n_cols,) int64."""
    nz = ids != 0
    pairs = np.unique(np.stack([cols[nz].astype(np.int64), ids[nz].astype(np.int64)]), axis=1)
    return np.bincount(pairs[0], minlength=n_cols).astype(np.int64)


def protein_chunks(lengths: np.ndarray, max_residues: int) -> list[slice]:
    """Consecutive protein slices of at most ``max_residues`` residues (at least one protein)."""
    out, start, total = [], 0, 0
    for i, n in enumerate(lengths):
        if i > start and total + n > max_residues:
            out.append(slice(start, i))
            start, total = i, 0
        total += int(n)
    if len(lengths):
        out.append(slice(start, len(lengths)))
    return out


def build_labels(rows: Iterable[UniProtRow], min_instances: int = 100, max_length: int = 1022,
                 require_alphafold: bool = True, drop_duplicates: bool = True,
                 amino_acids: bool = True, reference_parsing: bool = False) -> ConceptLabels:
    """Turn parsed UniProt rows into :class:`ConceptLabels` (DESIGN.md Q2).

    Args:
      min_instances: a categorical value becomes the concept ``<prefix>_<value>`` when it
        occurs at least this often over the kept proteins (the reference's
        ``min_required_instances``, default 100).
      max_length, require_alphafold, drop_duplicates: protein filters (reference: <= 1,022
        residues, an AlphaFold DB entry, first of each duplicate sequence).
      reference_parsing: reproduce the reference's parser: categorical values read from
        ``/note`` only (so Binding site values, counted by ``/ligand``, rarely match), occurrences
        without a frequent value left out of ``<prefix>_any`` too.
    """
    ids: list[str] = []
    seqs: list[bytes] = []
    seen: set[str] = set()
    dropped = collections.Counter()
    # compact typed buffers: all of Swiss-Prot has tens of millions of occurrences
    o_prot, o_col, o_val, o_cnt = (array.array("q") for _ in range(4))
    s_occ, s_start, s_stop = (array.array("q") for _ in range(3))
    codes: dict[tuple[int, str], int] = {}
    for row in rows:
        if len(row.sequence) > max_length:
            dropped["longer than max_length"] += 1
            continue
        if require_alphafold and not row.has_alphafold:
            dropped["no AlphaFold DB entry"] += 1
            continue
        if drop_duplicates and row.sequence in seen:
            dropped["duplicate sequence"] += 1
            continue
        seen.add(row.sequence)
        p = len(ids)
        ids.append(row.accession)
        seqs.append(row.sequence.encode())
        for occ in row.occurrences:
            col = COLUMNS[occ.column]
            parse_v = occ.note if (reference_parsing and col.kind == "categorical") else occ.value
            count_v = occ.value
            o_prot.append(p)
            o_col.append(occ.column)
            # codes are keyed by (column, text): a parsed note equal to a counted ligand name
            # maps to the same concept, which is how the reference's parser matches values
            o_val.append(-1 if parse_v is None else codes.setdefault((occ.column, parse_v), len(codes)))
            o_cnt.append(-1 if count_v is None else codes.setdefault((occ.column, count_v), len(codes)))
            for a, b in occ.spans:
                s_occ.append(len(o_prot) - 1)
                s_start.append(a)
                s_stop.append(b)
    if not ids:
        raise InputError(f"no protein kept (dropped: {dict(dropped) or 'none read'}); check the "
                         "TSV and the max_length / require_alphafold options")
    if len(ids) != len(set(ids)):
        dup = [k for k, v in collections.Counter(ids).items() if v > 1][0]
        raise InputError(f"accession {dup!r} occurs in more than one kept row")
    o_col_a, o_val_a, o_cnt_a = (np.frombuffer(x, np.int64) for x in (o_col, o_val, o_cnt))
    value_of = {code: key for key, code in codes.items()}
    counts = np.bincount(o_cnt_a[o_cnt_a >= 0], minlength=len(codes))

    concepts: list[str] = []
    value_concept = np.full(len(codes) + 1, -1, np.int64)  # code -> concept (last slot: none)
    column_concept = np.full(len(COLUMNS), -1, np.int64)   # binary/paired, or categorical _any
    for ci, col in enumerate(COLUMNS):
        if col.kind == "categorical":
            frequent = sorted((c for c in range(len(codes)) if value_of[c][0] == ci
                               and counts[c] >= min_instances), key=lambda c: (-counts[c], value_of[c][1]))
            for c in frequent:
                value_concept[c] = len(concepts)
                concepts.append(f"{col.prefix}_{value_of[c][1]}")
            column_concept[ci] = len(concepts)
            concepts.append(f"{col.prefix}_any")
        else:
            column_concept[ci] = len(concepts)
            concepts.append(col.prefix)
    if amino_acids:
        concepts += [f"amino_acid_{a}" for a in AMINO_ACIDS] + ["amino_acid_Other"]

    # one interval per (span, concept): the column concept, and the value concept if frequent
    s_occ_a = np.frombuffer(s_occ, np.int64)
    kind_cat = np.array([c.kind == "categorical" for c in COLUMNS])[o_col_a] if len(o_col_a) else np.zeros(0, bool)
    val_c = value_concept[np.where(o_val_a >= 0, o_val_a, len(codes))]
    any_c = column_concept[o_col_a] if len(o_col_a) else np.zeros(0, np.int64)
    if reference_parsing:
        any_c = np.where(kind_cat & (val_c < 0), -1, any_c)
    per_occ = np.stack([any_c, np.where(kind_cat, val_c, -1)], axis=1)  # (O, 2)
    occ_rep = np.repeat(s_occ_a, 2)
    conc = per_occ[s_occ_a].reshape(-1)
    keep = conc >= 0
    occ_rep, conc = occ_rep[keep], conc[keep]
    start = np.repeat(np.frombuffer(s_start, np.int64).astype(np.int32), 2)[keep]
    stop = np.repeat(np.frombuffer(s_stop, np.int64).astype(np.int32), 2)[keep]
    prot = np.frombuffer(o_prot, np.int64).astype(np.int32)[occ_rep]
    order = np.lexsort((conc, occ_rep, prot))  # protein, then annotation order
    lengths = np.array([len(s) for s in seqs], np.int64)
    labels = ConceptLabels(
        ids, np.frombuffer(b"".join(seqs), np.uint8).copy(),
        np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), concepts,
        prot[order], conc[order].astype(np.int32), occ_rep[order] + 1, start[order], stop[order],
        amino_acids,
        {"min_instances": min_instances, "max_length": max_length,
         "require_alphafold": require_alphafold, "drop_duplicates": drop_duplicates,
         "reference_parsing": reference_parsing, "dropped_proteins": dict(dropped)})
    log.info("concept labels: %d proteins, %d concepts, %d intervals; dropped %s",
             labels.n_proteins, labels.n_concepts, len(labels.iv_start), dict(dropped) or "none")
    return labels
