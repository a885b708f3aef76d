"""Readers of the study's outputs that the browser shows (each delegating to the stage's own
reader where there is one): the sweep's grid and final metrics, the selection table, the
UMAP map, the spatial table, LLM descriptions, proteins (concept scores: ``report.concepts``)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from interplm_jax.analysis.tables import read_table
from interplm_jax.errors import InputError
from interplm_jax.layout import AnnotateFiles

#: Final metrics of ``metrics.jsonl`` shown in the grid table (when the sweep logged them).
METRICS = ("loss", "l0", "fve", "dead")
#: Columns of ``spatial_layer<L>.tsv`` shown per feature.
SPATIAL = ("n_used", "tested", "seq_d", "seq_p_bonferroni", "struct_d", "struct_p_bonferroni",
           "struct_seq_ratio", "structural_only")


def _num(text: str) -> float | None:
    try:
        v = float(text)
    except ValueError:
        return None
    return None if math.isnan(v) else v


def final_metrics(sweep: Path) -> dict[str, dict[str, float]]:
    """SAE id -> its metrics at the last logged step (``<sweep>/metrics.jsonl``)."""
    from interplm_jax.sweep_saes import read_metrics

    return {sae: {k: v[-1] for k, v in curves.items()} for sae, curves in read_metrics(sweep).items()}


def grid_table(sweep: Path, chosen: str, selection_csv: Path | None, layer: int) -> dict:
    """Every SAE of the sweep: the hyperparameters that vary, final metrics, selection score.

    Returns ``{"columns": [...], "rows": [[...], ...], "chosen": id, "fixed": {hparam: value}}``
    (``fixed``: hyperparameters equal across the grid, e.g. arch and seed).
    """
    from interplm_jax.sweep_saes import read_grid

    grid = read_grid(sweep)
    final = final_metrics(sweep)
    scores = selection_scores(selection_csv, layer) if selection_csv else {}
    keys = [k for k in grid[0] if k != "id"]
    varying = [k for k in keys if len({json.dumps(r.get(k)) for r in grid}) > 1]
    fixed = {k: grid[0].get(k) for k in keys if k not in varying}
    steps = {final.get(r["id"], {}).get("step") for r in grid}
    metrics = [m for m in METRICS if any(m in final.get(r["id"], {}) for r in grid)]
    cols = ["sae", *varying, *metrics] + (["select_f1"] if scores else [])
    rows = []
    for r in grid:
        m = final.get(r["id"], {})
        rows.append([r["id"], *(r.get(k) for k in varying), *(m.get(k) for k in metrics)]
                    + ([scores.get(r["id"])] if scores else []))
    if len(steps) == 1:
        fixed["step"] = steps.pop()
    else:
        cols.insert(1 + len(varying), "step")
        for r, row in zip(grid, rows):
            row.insert(1 + len(varying), final.get(r["id"], {}).get("step"))
    return {"columns": cols, "rows": _round(rows), "chosen": chosen, "fixed": _round_dict(fixed)}


def _round_dict(d: dict) -> dict:
    return {k: _round(v) for k, v in d.items()}


def _selection_rows(path: Path, layer: int) -> list[tuple[str, float, bool]]:
    """(name, mean best F1, selected) of the SAEs (kind ``sae``; not the shuffled-model
    baseline's) of ``layer`` in ``selection.csv`` (evaluate_concepts.py select)."""
    t = read_table(path, ("kind", "layer", "name", "mean_best_f1", "selected"))
    return [(n, float(f), s == "True") for k, L, n, f, s in
            zip(t["kind"], t["layer"], t["name"], t["mean_best_f1"], t["selected"])
            if k == "sae" and L == str(layer)]


#: Columns of the concept report's ``summary.csv`` shown per layer (SAE vs baselines).
SUMMARY = ("kind", "name", "mean_test_f1", "n_concepts_test", "n_pairs_valid", "n_pairs_test")


def concept_summary(path: Path, layer: int) -> dict:
    """The rows of ``layer`` in the held-out report's ``summary.csv`` (``evaluate_concepts.py
    report``): ``{"columns": SUMMARY, "rows": [[kind, name, mean test F1, ...], ...]}``."""
    t = read_table(path, ("layer", *SUMMARY))
    rows = [[t[c][i] if c in ("kind", "name") else _num(t[c][i]) for c in SUMMARY]
            for i in range(len(t["layer"])) if t["layer"][i] == str(layer)]
    return {"columns": list(SUMMARY), "rows": _round(rows)}


def selection_scores(path: Path, layer: int) -> dict[str, float]:
    """SAE name -> mean best F1 of the SAEs of ``layer`` in ``selection.csv``."""
    out = {n: f for n, f, _ in _selection_rows(path, layer)}
    if not out:
        raise InputError(f"{path}: no row for layer {layer}")
    return out


def selected_name(path: Path, layer: int) -> str | None:
    return next((n for n, _, chosen in _selection_rows(path, layer) if chosen), None)


def umap_points(path: Path, n_features: int) -> dict:
    """``feature_map.tsv`` (analyze.py umap) -> ``{"x": [...], "y": [...], "cluster": [...]}``
    over features 0..F-1 (null where a feature is missing)."""
    t = read_table(path, ("feature", "x", "y", "cluster"))
    x, y, c = [None] * n_features, [None] * n_features, [None] * n_features
    for line, (f, xi, yi, ci) in enumerate(zip(t["feature"], t["x"], t["y"], t["cluster"]), 2):
        try:
            f = int(f)
            x_, y_, c_ = float(xi), float(yi), int(ci)
        except ValueError:
            raise InputError(f"{path}:{line}: cannot read feature/x/y/cluster") from None
        if not 0 <= f < n_features:
            raise InputError(f"{path}:{line}: feature {f} outside 0..{n_features - 1} "
                             "(a map of another SAE?)")
        x[f], y[f], c[f] = round(x_, 3), round(y_, 3), c_
    return {"x": x, "y": y, "cluster": c}


def spatial_rows(path: Path, n_features: int) -> dict:
    """``spatial_layer<L>.tsv`` (analyze.py spatial) -> ``{"columns": SPATIAL, "rows":
    {feature: [...]}}`` for features with at least one protein used."""
    t = read_table(path, ("feature", *SPATIAL))
    rows = {}
    for i, f in enumerate(t["feature"]):
        f = _int(f, path, i + 2)
        if not 0 <= f < n_features:
            raise InputError(f"{path}:{i + 2}: feature {f} outside 0..{n_features - 1}")
        vals = [t[c][i] for c in SPATIAL]
        if (_num(vals[0]) or 0) > 0:
            rows[f] = [v if v in ("true", "false") else _num(v) for v in vals]
    return {"columns": list(SPATIAL), "rows": {k: _round(v) for k, v in rows.items()}}


def descriptions(run: Path) -> dict[int, dict]:
    """Feature -> LLM description (``descriptions.csv`` of an annotate run, plus the Pearson r
    of ``validation.csv`` when present)."""
    from interplm_jax.annotate.describe import read_csv

    files = AnnotateFiles(run)
    path = files.descriptions
    if not path.is_file():
        return {}
    out = {}
    for line, row in enumerate(read_csv(path), 2):
        if row.get("status") == "ok" or row.get("description"):
            out[_int(row.get("feature"), path, line)] = {"summary": row.get("summary", ""),
                                        "description": row.get("description", "")}
    if files.validation.is_file():
        for line, row in enumerate(read_csv(files.validation), 2):
            f = _int(row.get("feature"), files.validation, line)
            if f in out and _num(row.get("pearson_r", "")) is not None:
                out[f]["pearson_r"] = round(float(row["pearson_r"]), 3)
    return out


def sequences(fasta: Path, ids: Sequence[str], lengths: np.ndarray) -> list[str]:
    """The sequences of ``ids`` from ``fasta``, checked against the store's token counts."""
    from interplm_jax.fasta import iter_records

    want = set(ids)
    seqs = {}
    for rec in iter_records(fasta):
        if rec.id in want:
            seqs[rec.id] = rec.sequence[:-1] if rec.sequence.endswith("*") else rec.sequence
    out = []
    for pid, n in zip(ids, lengths):
        if pid not in seqs:
            raise InputError(f"{fasta}: no sequence for protein {pid!r} of the activation store")
        if len(seqs[pid]) != n:
            raise InputError(f"protein {pid!r}: {len(seqs[pid])} residues in {fasta} but {n} "
                             "tokens in the activation store")
        out.append(seqs[pid])
    return out


def _int(text, path: Path, line: int) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        raise InputError(f"{path}:{line}: feature {text!r} is not an integer") from None


def _round(x, digits: int = 4):
    """Floats to ``digits`` significant digits (nested lists), for a compact JSON."""
    if isinstance(x, list):
        return [_round(v, digits) for v in x]
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return None if math.isnan(x) else float(f"{x:.{digits}g}")
    if isinstance(x, np.integer):
        return int(x)
    return x
