"""The bench table (``bench.csv``, DESIGN.md section 7) and its Pareto plots.

One row per SAE per layer per model (``model``, the study's main model -- ``esm2`` in studies
made before it was named so -- and the controls ``shuffled``, ``random_init``) and one per
neuron baseline: ``model, layer, sae, arch``, the grid's varying hyperparameters, then
:data:`METRICS` and ``chosen``. The plots read this table only.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from interplm_jax.atomic import atomic_path
from interplm_jax.bench.grid import GridMeasure
from interplm_jax.concepts.metrics import best_thresholds, heldout_report, mean_best_f1, reported, scores
from interplm_jax.concepts.report import write_csv
from interplm_jax.errors import InputError
from interplm_jax.layout import CONTROLS, LEGACY_MAIN, MAIN, BenchFiles
from interplm_jax.sae_dir import SavedSAE

log = logging.getLogger(__name__)

KEYS = ("model", "layer", "sae", "arch")
METRICS = ("l0", "fve", "dead_frac", "dense_frac", "loss_recovered", "n_concepts", "mean_best_f1", "test_f1")
MODELS = (MAIN, LEGACY_MAIN, *CONTROLS)
#: (y column, axis label) of each Pareto plot; x is always l0.
PARETO = (("fve", "fraction of variance explained (test)"),
          ("loss_recovered", "MLM loss recovered (test)"),
          ("n_concepts", "concepts with a feature at valid F1 > 0.5"))


def sae_name(sae: SavedSAE, fallback: str) -> str:
    return "neurons" if sae.arch == "neuron" else str(sae.meta.get("id") or fallback)


def grid_rows(model: str, layer: int, saes: Sequence[SavedSAE], names: Sequence[str],
              measure: GridMeasure, loss_recovered: Mapping[str, float] | None = None,
              chosen: str | None = None, top_f1: float = 0.5, reference_test: bool = False) -> list[dict]:
    """Rows of G SAEs measured together (``names``: their ids; ``loss_recovered``: id -> value,
    missing = not measured; the neuron baseline's is 1, its reconstruction being the identity)."""
    rows = []
    r = measure.recon
    for g, (sae, name) in enumerate(zip(saes, names)):
        valid, test = measure.valid[g], measure.test[g]
        best_f1 = best_thresholds(scores(valid)).f1.max(axis=1)[reported(valid.concepts)]
        lr = 1.0 if sae.arch == "neuron" else (loss_recovered or {}).get(name, math.nan)
        rows.append({"model": model, "layer": int(layer), "sae": name, "arch": sae.arch,
                     **{k: v for k, v in sae.hparams.items() if k not in ("id", "arch")},
                     "l0": float(r.l0[g]), "fve": float(r.fve[g]), "dead_frac": float(r.dead_frac[g]),
                     "dense_frac": float(r.dense_frac[g]), "loss_recovered": float(lr),
                     "n_concepts": int((best_f1 > top_f1).sum()), "mean_best_f1": mean_best_f1(valid),
                     "test_f1": heldout_report(valid, test, top_f1, reference_test).mean_test_f1,
                     "chosen": name == chosen})
    return rows


def columns(rows: Sequence[dict], every_hparam: bool = False) -> list[str]:
    """KEYS, the hyperparameters that vary between the rows' SAEs (``every_hparam``: all of
    them, for a part table, so that the joined table can tell which vary), METRICS, ``chosen``."""
    hp = sorted({k for r in rows for k in r} - {*KEYS, *METRICS, "chosen"})
    if not every_hparam:
        hp = [k for k in hp if len({str(r.get(k, "")) for r in rows if r["sae"] != "neurons"}) > 1]
    return [*KEYS, *hp, *METRICS, "chosen"]


def write_table(path: str | os.PathLike, rows: Sequence[dict], keep: Sequence[str] | None = None) -> Path:
    """``rows`` as CSV, sorted by model, layer, SAE; ``keep``: the columns (default: :func:`columns`)."""
    order = sorted(rows, key=lambda r: (MODELS.index(r["model"]) if r["model"] in MODELS else 9,
                                        int(r["layer"]), r["sae"] == "neurons", str(r["sae"])))
    return write_csv(path, order, list(keep or columns(rows)))


def read_table(path: str | os.PathLike) -> list[dict]:
    """Rows of a bench table (part or whole) with numbers as numbers, ``chosen`` as bool."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise InputError(f"{path}: not found (a bench table from scripts/bench.py)") from None
    need = set(KEYS) | set(METRICS) | {"chosen"}
    for i, r in enumerate(rows, 2):
        missing = need - {k for k, v in r.items() if k is not None}
        if missing:
            raise InputError(f"{path}:{i}: missing column(s) {sorted(missing)}")
        for k in METRICS:
            try:
                r[k] = int(r[k]) if k == "n_concepts" else float(r[k])
            except ValueError:
                raise InputError(f"{path}:{i}: {k} = {r[k]!r} is not a number") from None
        r["layer"], r["chosen"] = int(r["layer"]), r["chosen"] == "True"
    return rows


def plot_pareto(rows: Sequence[dict], y: str, label: str, path: str | os.PathLike) -> str | None:
    """L0 against ``y``: each model's SAEs per layer (the Pareto front drawn, the chosen SAE
    ringed), the neuron baselines as reference points. Returns why no plot was written, or None."""
    pts = [r for r in rows if np.isfinite(r[y]) and np.isfinite(r["l0"])]
    if not pts:
        return f"no finite {y} in the table"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    markers = {MAIN: "o", LEGACY_MAIN: "o", "shuffled": "s", "random_init": "^"}
    layers = sorted({r["layer"] for r in pts})
    colors = {L: plt.cm.viridis(i / max(1, len(layers) - 1)) for i, L in enumerate(layers)}
    for model in sorted({r["model"] for r in pts}, key=lambda m: MODELS.index(m) if m in MODELS else 9):
        for L in layers:
            group = [r for r in pts if r["model"] == model and r["layer"] == L and r["sae"] != "neurons"]
            if not group:
                continue
            x, v = np.array([r["l0"] for r in group]), np.array([r[y] for r in group])
            ax.scatter(x, v, marker=markers.get(model, "x"), color=colors[L], alpha=0.8,
                       label=f"{model} L{L}")
            front = pareto_front(x, v)
            ax.plot(x[front], v[front], color=colors[L], alpha=0.5, lw=1,
                    ls="--" if model in CONTROLS else "-")
            for r in group:
                if r["chosen"]:
                    ax.scatter([r["l0"]], [r[y]], s=160, facecolors="none", edgecolors="red")
    for r in pts:
        if r["sae"] == "neurons":
            ax.scatter([r["l0"]], [r[y]], marker="*", s=140, color=colors[r["layer"]], edgecolors="k",
                       label=f"neurons L{r['layer']}")
    x_all = [r["l0"] for r in pts]
    if min(x_all) > 0 and max(x_all) / min(x_all) > 20:
        ax.set_xscale("log")
    if y == "n_concepts":
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("L0 (active features per residue, test)")
    ax.set_ylabel(label)
    ax.set_title(f"Sparsity vs {label.split(' (')[0]}: every SAE of the grid\n"
                 "(line: Pareto front per model and layer; red ring: chosen SAE; star: neurons)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)
    return None


def pareto_front(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Indices of the points no other point beats (lower or equal x and higher or equal y, one
    strictly), ordered by x. x, y: (n,)."""
    order = np.lexsort((-y, x))
    keep, best = [], -np.inf
    for i in order:
        if y[i] > best:
            keep.append(i)
            best = y[i]
    return np.array(keep, np.int64)


def plot_all(rows: Sequence[dict], out: BenchFiles) -> dict[str, str]:
    """The Pareto plots of :data:`PARETO`; file name -> why it was not written (for each plot
    left out, also logged)."""
    skipped = {}
    for y, label in PARETO:
        path = out.pareto(y)
        why = plot_pareto(rows, y, label, path)
        if why is not None:
            log.warning("%s not written: %s", path.name, why)
            skipped[path.name] = why
    return skipped
