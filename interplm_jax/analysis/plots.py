"""PNG figures of the analyses (matplotlib's object API: no global pyplot state)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from interplm_jax.atomic import atomic_path

_NOISE = "#c8c8c8"


def _figure(size=(7.0, 6.0)):
    from matplotlib.figure import Figure

    return Figure(figsize=size, dpi=120, layout="constrained")


def _save(fig, path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


def _size(n: int) -> float:
    """Marker area for n points: large for a few dozen, small for ten thousand."""
    return float(np.clip(4000 / max(n, 1), 3, 30))


def _categorical(ax, xy, labels: np.ndarray, title: str, max_legend: int = 12) -> None:
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    labels = np.asarray(labels, dtype=object)
    none = np.array([lab in ("", "-1", -1, None) for lab in labels])
    s = _size(len(xy))
    ax.scatter(*xy[none].T, s=s * 0.8, c=_NOISE, label="none / noise", linewidths=0)
    values, counts = np.unique(labels[~none].astype(str), return_counts=True)
    ranked = values[np.argsort(-counts, kind="stable")]
    for i, v in enumerate(ranked):
        sel = ~none & (labels.astype(str) == v)
        ax.scatter(*xy[sel].T, s=s, color=cmap(i % 20), linewidths=0,
                   label=v if i < max_legend else None)
    ax.set_title(title)
    if len(ranked):
        ax.legend(markerscale=3, fontsize=7, loc="best", title=None if len(ranked) <= max_legend
                  else f"top {max_legend} of {len(ranked)}", title_fontsize=7)


def plot_feature_map(path: str | os.PathLike, xy: np.ndarray, cluster: np.ndarray,
                     concept: np.ndarray | None = None, ratio: np.ndarray | None = None,
                     title: str = "") -> Path:
    """Scatter of the UMAP coordinates (F, 2): one panel coloured by HDBSCAN cluster, one by
    best concept (text per feature, ``""`` for none) and one by log2 of the structural/sequential
    effect-size ratio, each where given."""
    panels = 1 + (concept is not None) + (ratio is not None)
    fig = _figure((6.0 * panels, 5.5))
    axes = fig.subplots(1, panels, squeeze=False)[0]
    ok = ~np.isnan(xy).any(axis=1)
    _categorical(axes[0], xy[ok], np.asarray(cluster)[ok], "HDBSCAN cluster")
    i = 1
    if concept is not None:
        _categorical(axes[i], xy[ok], np.asarray(concept, dtype=object)[ok], "best concept")
        i += 1
    if ratio is not None:
        ax = axes[i]
        r = np.log2(np.asarray(ratio, dtype=float)[ok])
        has = np.isfinite(r)
        s = _size(int(ok.sum()))
        ax.scatter(*xy[ok][~has].T, s=s * 0.8, c=_NOISE, linewidths=0,
                   label="not tested / no ratio")
        lim = max(float(np.nanmax(np.abs(r[has]))), 1e-6) if has.any() else 1.0
        sc = ax.scatter(*xy[ok][has].T, s=s, c=r[has], cmap="coolwarm", vmin=-lim, vmax=lim,
                        linewidths=0)
        fig.colorbar(sc, ax=ax, label="log2(structural d / sequential d)")
        ax.set_title("structural / sequential clustering")
        ax.legend(fontsize=7, loc="best")
    for ax in axes:
        ax.set_xlabel("UMAP 1")
        ax.set_ylabel("UMAP 2")
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_effect_sizes(path: str | os.PathLike, table: dict[str, np.ndarray],
                      title: str = "") -> Path:
    """Structural vs sequential Cohen's d of the tested features; structural-only highlighted."""
    fig = _figure()
    ax = fig.subplots()
    t = np.asarray(table["tested"], bool)
    seq_d, struct_d = np.asarray(table["seq_d"])[t], np.asarray(table["struct_d"])[t]
    only = np.asarray(table["structural_only"], bool)[t]
    sig = (np.asarray(table["seq_significant"], bool) | np.asarray(table["struct_significant"],
                                                                    bool))[t]
    ax.scatter(seq_d[~sig], struct_d[~sig], s=8, c=_NOISE, linewidths=0,
               label="neither significant")
    ax.scatter(seq_d[sig & ~only], struct_d[sig & ~only], s=8, c="#4477aa", linewidths=0,
               label="sequential and/or structural")
    ax.scatter(seq_d[only], struct_d[only], s=14, c="#cc3311", linewidths=0,
               label=f"structural only ({int(only.sum())})")
    finite = np.isfinite(seq_d) & np.isfinite(struct_d)
    if finite.any():
        lo = float(min(seq_d[finite].min(), struct_d[finite].min(), 0))
        hi = float(max(seq_d[finite].max(), struct_d[finite].max(), 0))
        ax.plot([lo, hi], [lo, hi], lw=0.8, c="k", ls="--", label="y = x")
    ax.axhline(0, lw=0.5, c="k")
    ax.axvline(0, lw=0.5, c="k")
    ax.set_xlabel("sequential clustering, Cohen's d")
    ax.set_ylabel("structural clustering, Cohen's d")
    ax.set_title(title or f"{int(t.sum())} features tested")
    ax.legend(fontsize=8, loc="best")
    return _save(fig, path)
