"""The feature browser's bench view: a bench directory (``scripts/bench.py table --out``, the
pipeline's ``<out>/bench``) as the page embeds it.

``bench.csv`` goes in whole (every SAE of every grid, the controls, the chosen SAEs); the small-
study warnings of ``warnings.json``; and the per-layer tables of :data:`TABLES` (the sparse-probe
summary, the causal test). A new bench output shown in the page is one more :class:`BenchTable` entry: the
page draws every table of :data:`TABLES` the same way (sortable, per layer, chosen and control
rows marked), with its title and note.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Callable

from interplm_jax.analysis.tables import read_table as read_text_table
from interplm_jax.bench.causal import read_causal
from interplm_jax.bench.table import KEYS, METRICS, read_table
from interplm_jax.errors import InputError
from interplm_jax.layout import BenchFiles
from interplm_jax.report.inputs import _round


def _cell(text: str | float):
    """A CSV cell (or a number read from one) as the page shows it: a number where it is one, None where empty or not
    finite (JSON has no NaN), ``True``/``False`` as booleans."""
    if isinstance(text, (int, float)):
        return text if math.isfinite(text) else None
    if text in ("True", "False"):
        return text == "True"
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        v = float(text)
    except ValueError:
        return text or None
    return v if math.isfinite(v) else None


def plain_table(path: Path, chosen: dict) -> dict:
    """Any CSV of the bench, column by column as written (numbers as numbers)."""
    t = read_text_table(path)
    cols = list(t)
    n = len(t[cols[0]]) if cols else 0
    return {"columns": cols, "rows": _round([[_cell(t[c][i]) for c in cols] for i in range(n)])}


def probe_table(path: Path, chosen: dict) -> dict:
    """``probes_summary.csv`` one row per (model, layer, probe): the mean test F1 at each k of
    the SAEs and the k best neurons, the hidden state's (all d dimensions) in its own column,
    and whether the SAE is the one chosen for (model, layer)."""
    t = read_text_table(path, ("model", "layer", "probe", "k", "mean_test_f1", "n_concepts"))
    for i, (layer, k) in enumerate(zip(t["layer"], t["k"]), 2):
        if not (layer.isdigit() and k.isdigit()):
            raise InputError(f"{path}:{i}: layer {layer!r} and k {k!r} must be integers")
    ks = sorted({int(k) for k, p in zip(t["k"], t["probe"]) if p != "hidden"})
    rows: dict[tuple, dict] = {}
    for i in range(len(t["model"])):
        key = (t["model"][i], int(t["layer"][i]), t["probe"][i])
        r = rows.setdefault(key, {"n": _cell(t["n_concepts"][i])})
        k = "hidden" if key[2] == "hidden" else int(t["k"][i])
        r[k] = _cell(t["mean_test_f1"][i])
        if key[2] == "hidden":
            r["d"] = int(t["k"][i])
    order = sorted(rows, key=lambda k: (k[0], k[1], {"neurons": 1, "hidden": 2}.get(k[2], 0), k[2]))
    cols = ["model", "layer", "probe", *(f"k={k}" for k in ks), "hidden state", "concepts", "chosen"]
    out = []
    for model, layer, probe in order:
        r = rows[(model, layer, probe)]
        name = f"hidden state (d={r['d']})" if probe == "hidden" else probe
        out.append([model, layer, name, *(r.get(k) for k in ks), r.get("hidden"), r["n"],
                    chosen.get((model, layer)) == probe])
    return {"columns": cols, "rows": _round(out)}


#: The causal table's columns in the page (causal.csv's names; headers in bench_view.js).
CAUSAL_COLUMNS = ("model", "layer", "concept", "feature", "n_residues", "n_proteins", "act_mean",
                  "delta_zero", "z_zero", "q_zero", "delta_clamp", "z_clamp", "q_clamp", "null_size")


def causal_table(path: Path, chosen: dict) -> dict:
    """``causal.csv`` (:mod:`interplm_jax.bench.causal`): per concept its feature, how much was
    measured, and per edit the mean change of log p(true residue), its z against the null and
    its BH-adjusted p (the p-values and the null's spread stay in the CSV)."""
    rows = [[r[c] if isinstance(r[c], str) else _cell(r[c]) for c in CAUSAL_COLUMNS] for r in read_causal(path)]
    return {"columns": list(CAUSAL_COLUMNS), "rows": _round(rows)}


@dataclasses.dataclass(frozen=True)
class BenchTable:
    """One table of the bench view.

    Attributes:
      key: its id in the page (``benchtable-<key>``).
      file: the :class:`~interplm_jax.layout.BenchFiles` attribute of its CSV (skipped if absent).
      title, note: its heading and the plain-words note under its ``?``.
      read: (path, {(model, layer): chosen SAE}) -> ``{"columns", "rows"}``; a ``layer``
        column filters it by the layer shown, a true ``chosen`` column marks a row.
    """

    key: str
    file: str
    title: str
    note: str
    read: Callable[[Path, dict], dict] = plain_table


TABLES = (
    BenchTable("probes", "probes_summary", "Sparse probing: k best features vs neurons vs the hidden state",
               "Per concept, a logistic regression on the k features with the largest mean difference "
               "between the concept's residues and the rest (fitted on the validation proteins), scored "
               "by F1 on the test proteins; the mean over concepts. The same probe on the k best "
               "neurons of the model, and on the whole hidden state (every dimension: the upper bound).", probe_table),
    BenchTable("causal", "causal", "Causal test: each concept's feature zeroed and clamped where the concept is",
               "For each concept, the chosen SAE's feature for it (chosen on the validation proteins) is set to 0 "
               "(zero), and separately to its maximum (clamp), at the concept's annotated residues of test proteins, "
               "inside the model; \u0394 log p: the mean change of the model's log-probability of the true residue "
               "there (negative: less likely). The same edits on random features of similar activation frequency (the "
               "null) give z: the effect in units of the null's spread, and the p-value (how often a random feature "
               "moves it at least as much), shown adjusted for the many concepts tested (q, Benjamini-Hochberg). "
               "activation: the feature's mean activation at those residues (1 = its maximum); zeroing a feature "
               "that is silent there changes nothing.", causal_table),
)


def bench_data(root: Path) -> dict:
    """``{"columns", "rows", "hparams", "warnings", "tables": [{key, title, note, columns, rows}]}``
    of a bench directory; ``hparams``: the columns that are the grid's hyperparameters."""
    files = BenchFiles(Path(root))
    rows = read_table(files.table)
    if not rows:
        raise InputError(f"{files.table}: no SAE in the bench table")
    cols = [c for c in rows[0] if c is not None]
    chosen = {(r["model"], r["layer"]): r["sae"] for r in rows if r["chosen"]}
    table = [[_cell(r[c]) for c in cols] for r in rows]
    warnings = []
    if files.warnings.is_file():
        try:
            warnings = json.loads(files.warnings.read_text())
        except json.JSONDecodeError as e:
            raise InputError(f"{files.warnings}: not JSON ({e})") from None
        if not isinstance(warnings, list) or not all(isinstance(w, str) for w in warnings):
            raise InputError(f"{files.warnings}: expected a list of strings")
    tables = []
    for t in TABLES:
        path = getattr(files, t.file)
        if path.is_file():
            tables.append({"key": t.key, "title": t.title, "note": t.note, **t.read(path, chosen)})
    return {"columns": cols, "rows": _round(table),
            "hparams": [c for c in cols if c not in (*KEYS, *METRICS, "chosen")],
            "warnings": warnings, "tables": tables}
