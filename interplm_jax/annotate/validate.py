"""Validation of descriptions: Claude predicts eval activations; Pearson r per feature.

Q9: the eval proteins of a feature are the eval half of its selected examples (same bins as
the train half). They are shown in a seeded random order (the selection sorts them by
activation, which would give the answer away).
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from interplm_jax.annotate.config import AnnotateConfig
from interplm_jax.annotate.describe import FeatureExamples
from interplm_jax.annotate.llm import LLM, Request
from interplm_jax.annotate.metadata import ProteinInfo
from interplm_jax.annotate.prompts import parse_predictions, render, validation_table
from interplm_jax.atomic import atomic_path, atomic_write

log = logging.getLogger(__name__)

VALIDATION_COLUMNS = ("feature", "status", "pearson_r", "n_eval", "summary", "error")


def pearson_r(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two vectors; NaN when either is constant or shorter than 2."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"pearson_r needs two vectors of one length, got {x.shape} and {y.shape}")
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    dx, dy = x - x.mean(), y - y.mean()
    denom = np.sqrt((dx @ dx) * (dy @ dy))
    return float(np.clip((dx @ dy) / denom, -1.0, 1.0)) if denom > 0 else float("nan")


def validation_requests(examples: Sequence[FeatureExamples], described: Mapping[int, Mapping[str, str]],
                        metadata: Mapping[str, ProteinInfo], cfg: AnnotateConfig,
                        prompt_dir: str | Path | None = None,
                        placeholder: bool = False, model: str = "ESM-2") -> list[tuple[Request, list[str]]]:
    """(request, shown protein ids) per described feature.

    With ``placeholder`` (dry runs before any description exists) every feature gets a
    stand-in description as long as the description answer budget allows.
    """
    system = render("validate_system", prompt_dir, model=model)
    filler = "x" * int(cfg.llm.max_tokens_describe * cfg.llm.chars_per_token)
    out = []
    for fx in examples:
        if fx.excluded or not fx.eval or (fx.feature not in described and not placeholder):
            continue
        d = described.get(fx.feature) or {"summary": "<summary>", "description": filler}
        rng = np.random.default_rng([cfg.selection.seed, fx.feature])
        ids = [fx.eval[i].protein for i in rng.permutation(len(fx.eval))]
        table = validation_table([metadata[p] for p in ids], cfg.prompt.max_sequence_chars)
        prompt = render("validate", prompt_dir, feature=fx.feature, summary=d["summary"],
                        description=d["description"], table=table)
        out.append((Request(f"validate-{fx.feature}", system, prompt,
                            cfg.llm.max_tokens_validate), ids))
    return out


def validate_features(examples: Sequence[FeatureExamples],
                      described: Mapping[int, Mapping[str, str]],
                      metadata: Mapping[str, ProteinInfo], llm: LLM, cfg: AnnotateConfig,
                      prompt_dir: str | Path | None = None, model: str = "ESM-2",
                      ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Predict eval activations per described feature; (per-feature rows, prediction rows)."""
    pairs = validation_requests(examples, described, metadata, cfg, prompt_dir, model=model)
    ids_of = {req.label: ids for req, ids in pairs}
    parsers = [functools.partial(parse_predictions, ids=ids) for _, ids in pairs]
    outcomes = {o.label: o for o in llm.run([r for r, _ in pairs], parsers, desc="validation")}
    rows, preds = [], []
    for fx in examples:
        label = f"validate-{fx.feature}"
        if label not in ids_of:
            continue
        o = outcomes[label]
        row = {"feature": fx.feature, "n_eval": len(fx.eval),
               "summary": described[fx.feature]["summary"], "pearson_r": "", "error": o.error}
        if o.ok:
            measured = {e.protein: e.activation for e in fx.eval}
            ids = ids_of[label]
            m = np.array([measured[p] for p in ids])
            p = np.array([o.value[p] for p in ids])
            r = pearson_r(p, m)
            row["pearson_r"] = r
            row["status"] = "ok" if np.isfinite(r) else "undefined"
            if not np.isfinite(r):
                row["error"] = "constant predictions or activations: r undefined"
            preds += [{"feature": fx.feature, "protein": q, "measured": a, "predicted": b}
                      for q, a, b in zip(ids, m, p)]
        else:
            row["status"] = "failed"
        rows.append(row)
    return rows, preds


def summarise(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts by status and the distribution of r over features with a defined r."""
    r = np.array([float(x["pearson_r"]) for x in rows if x["status"] == "ok"])
    status = {s: sum(x["status"] == s for x in rows) for s in ("ok", "undefined", "failed")}
    stats: dict[str, Any] = {"features": len(rows), **status}
    if r.size:
        stats.update(mean_r=float(r.mean()), median_r=float(np.median(r)),
                     q25_r=float(np.quantile(r, 0.25)), q75_r=float(np.quantile(r, 0.75)),
                     frac_r_above_0_5=float((r > 0.5).mean()))
    return stats


def plot_histogram(rows: Sequence[Mapping[str, Any]], path: str | Path, title: str = "") -> None:
    """Histogram PNG of Pearson r over the validated features."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = [float(x["pearson_r"]) for x in rows if x["status"] == "ok"]
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=150)
    ax.hist(r, bins=np.linspace(-1, 1, 21), color="#4c72b0", edgecolor="white")
    if r:
        ax.axvline(float(np.median(r)), color="k", ls="--", lw=1, label=f"median {np.median(r):.2f}")
        ax.legend(frameon=False)
    ax.set_xlabel("Pearson r (predicted vs measured max activation)")
    ax.set_ylabel("features")
    ax.set_title(title or f"LLM description validation ({len(r)} features)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)


def write_summary(path: str | Path, stats: Mapping[str, Any]) -> None:
    atomic_write(path, json.dumps(dict(stats), indent=2))
