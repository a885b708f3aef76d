"""Preflight before a sweep trains (:func:`check_statistics`, :func:`check_dry_run`).

From the store's statistics, warn when the layer's mean dominates the token norm (and the inputs
are not centred) or when outlier dimensions exist; from a short dry run of the whole grid (its
sweep directory is ``<sweep>/preflight``), warn when an SAE's loss is not finite or when most of
its features are dead already. Each warning says what to change (the centring and scaling
options: :mod:`interplm_jax.input_transform`).

References:
  Simon, Adams & Zou (2026), arXiv 2605.31518: dead SAE features on protein LMs traced to outlier
  dimensions and an uncentred activation mean.
"""

from __future__ import annotations

import numpy as np

from interplm_jax.store.stats import LayerStats


def check_statistics(stats: LayerStats, center: bool, max_mean_ratio: float) -> list[str]:
    """Warnings (with what to change) from a layer's activation statistics."""
    warnings = []
    ratio = stats.mean_norm_ratio
    if ratio > max_mean_ratio and not center:
        warnings.append(
            f"layer {stats.layer}: the mean activation dominates the token norm (||mean|| / mean "
            f"token norm = {ratio:.2f} > {max_mean_ratio}); an SAE spends features and its b_pre "
            "on it: set train.input_center: true (folded into the saved SAEs)")
    out = stats.outliers()
    dims = sorted(set(out["var"]) | set(out["absmax"]))
    if dims:
        share = float(stats.var[out["var"]].sum() / stats.var.sum()) if out["var"] else 0.0
        warnings.append(
            f"layer {stats.layer}: {len(dims)} outlier dimension(s) {dims[:10]}"
            f"{' ...' if len(dims) > 10 else ''} (variance up to "
            f"{float(stats.var.max() / max(np.median(stats.var), 1e-30)):.0f}x the median; "
            f"{100 * share:.0f}% of the total variance): the reconstruction loss is dominated by "
            "them and features die; set train.input_center: true and train.input_scale: sqrt_d, "
            "and watch the dry run's dead fraction")
    return warnings


def check_dry_run(grid: list[dict], ok: np.ndarray, last: dict[str, dict], steps: int,
                  max_dead: float) -> list[str]:
    """Warnings from a dry run: SAEs with a non-finite loss, and SAEs mostly dead.

    Args:
      grid: the grid rows. ok: (G,) False where the loss went non-finite.
      last: SAE id -> its last metrics row (``dead`` = fraction of features dead).
    """
    warnings = []
    for row, good in zip(grid, ok):
        what = ", ".join(f"{k}={v}" for k, v in row.items() if k not in ("id", "arch"))
        if not good:
            warnings.append(f"dry run: SAE {row['id']} ({what}) hit a non-finite loss within "
                            f"{steps} steps: lower its lr (or set train.input_scale: sqrt_d)")
            continue
        dead = last.get(row["id"], {}).get("dead")
        if dead is not None and dead > max_dead:
            warnings.append(f"dry run: SAE {row['id']} ({what}) has {100 * dead:.0f}% of its "
                            f"features dead after {steps} steps (> {100 * max_dead:.0f}%): lower "
                            "its sparsity penalty or lr, or centre the inputs "
                            "(train.input_center: true)")
    return warnings
