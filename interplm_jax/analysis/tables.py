"""Tab-separated tables in and out (written atomically; NaN written as an empty cell)."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from interplm_jax.atomic import atomic_write
from interplm_jax.errors import InputError


def _cell(v) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (float, np.floating)):
        return "" if np.isnan(v) else f"{float(v):.6g}"
    return str(v)


def write_tsv(path: str | os.PathLike, columns: Mapping[str, Sequence],
              delimiter: str = "\t") -> Path:
    """Write equal-length columns as a TSV (or, with ``delimiter=","``, a CSV) with a header."""
    names = list(columns)
    n = {len(columns[c]) for c in names}
    if len(n) > 1:
        raise ValueError(f"columns of unequal lengths: { {c: len(columns[c]) for c in names} }")
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=delimiter, lineterminator="\n")
    w.writerow(names)
    for row in zip(*(columns[c] for c in names)):
        w.writerow([_cell(v) for v in row])
    return atomic_write(path, buf.getvalue())


def read_table(path: str | os.PathLike, required: Sequence[str] = ()) -> dict[str, list[str]]:
    """Read a TSV or CSV (by extension; ``.tsv``/``.txt`` tab, else comma) into columns of text.

    Raises:
      InputError: missing file, no header, or a required column absent (named).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: table not found")
    delim = "," if path.suffix.lower() == ".csv" else "\t"
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter=delim))
    if not rows:
        raise InputError(f"{path}: empty table (expected a header line)")
    header, body = rows[0], rows[1:]
    missing = [c for c in required if c not in header]
    if missing:
        raise InputError(f"{path}: missing column(s) {missing}; columns are {header}")
    for i, r in enumerate(body, start=2):
        if len(r) != len(header):
            raise InputError(f"{path}:{i}: {len(r)} fields, header has {len(header)}")
    return {c: [r[j] for r in body] for j, c in enumerate(header)}


def feature_column(path: str | os.PathLike, column: str, n_features: int,
                   numeric: bool) -> np.ndarray:
    """Per-feature values (F,) from a table with a ``feature`` column and ``column``.

    Features absent from the table get NaN (numeric) or ``""``.
    """
    table = read_table(path, ("feature", column))
    out = np.full(n_features, np.nan) if numeric else np.full(n_features, "", dtype=object)
    for line, (f, v) in enumerate(zip(table["feature"], table[column]), start=2):
        try:
            f = int(f)
            value = (float(v) if v != "" else np.nan) if numeric else v
        except ValueError:
            raise InputError(f"{path}:{line}: cannot read feature {f!r} / {column} {v!r}") from None
        if not 0 <= f < n_features:
            raise InputError(f"{path}:{line}: feature {f} outside 0..{n_features - 1}")
        out[f] = value
    return out


def write_dashboard_umap(path: str | os.PathLike, table: Mapping[str, np.ndarray]) -> Path:
    """``UMAP.csv`` as InterPLM's dashboard reads it: rows in feature order, columns
    ``UMAP 0``, ``UMAP 1``, ``cluster``, ``concept``."""
    concept = table.get("concept", [""] * len(table["x"]))
    return write_tsv(path, {"UMAP 0": table["x"], "UMAP 1": table["y"],
                            "cluster": table["cluster"], "concept": concept}, delimiter=",")


def write_dashboard_structure(path: str | os.PathLike, table: Mapping[str, np.ndarray]) -> Path:
    """``Structure_feats.csv`` as InterPLM's dashboard reads it (tested features): ``feat``,
    ``sequential_cohen``, ``structural_cohen``, and our corrected P values and flag."""
    t = np.asarray(table["tested"], bool)
    return write_tsv(path, {"feat": np.asarray(table["feature"])[t],
                            "sequential_cohen": np.asarray(table["seq_d"])[t],
                            "structural_cohen": np.asarray(table["struct_d"])[t],
                            "sequential_p": np.asarray(table["seq_p_bonferroni"])[t],
                            "structural_p": np.asarray(table["struct_p_bonferroni"])[t],
                            "structural_only": np.asarray(table["structural_only"])[t]},
                     delimiter=",")
