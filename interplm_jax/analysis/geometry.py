"""Where features sit relative to each other: UMAP of the unit-normalized decoder rows, HDBSCAN
clusters (DESIGN.md section 4; paper: cosine, 15 neighbours, min_dist 0.1; min cluster 5,
min samples 3).

umap-learn and hdbscan are imported when first used (umap's numba compilation takes seconds).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
import time
import warnings

import numpy as np

from interplm_jax.analysis.config import UmapConfig
from interplm_jax.errors import InputError
from interplm_jax.progress import progress_enabled

log = logging.getLogger(__name__)


def unit_rows(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``w`` (F, d) scaled to unit L2 norm; also the mask (F,) of nonzero rows."""
    w = np.asarray(w, dtype=np.float64)
    norms = np.linalg.norm(w, axis=1)
    ok = norms > 0
    return np.divide(w, norms[:, None], out=np.zeros_like(w), where=ok[:, None]), ok


@dataclasses.dataclass(frozen=True)
class FeatureMap:
    """``xy`` (F, 2) UMAP coordinates (NaN for zero decoder rows), ``cluster`` (F,) HDBSCAN
    label (-1: noise or zero row)."""

    xy: np.ndarray
    cluster: np.ndarray

    def table(self) -> dict[str, np.ndarray]:
        """Columns feature, x, y, cluster."""
        return dict(feature=np.arange(len(self.cluster)), x=self.xy[:, 0], y=self.xy[:, 1],
                    cluster=self.cluster)


def feature_map(w_dec: np.ndarray, cfg: UmapConfig = UmapConfig()) -> FeatureMap:
    """UMAP + HDBSCAN of the decoder rows.

    Args:
      w_dec: (F, d) decoder matrix of one SAE (``params["W_dec"]``).
    Returns:
      The :class:`FeatureMap`; zero rows are left out of both steps.
    """
    import hdbscan
    import umap

    w_dec = np.asarray(w_dec)
    if w_dec.ndim != 2:
        raise InputError(f"W_dec: expected a (F, d) matrix, got shape {w_dec.shape}")
    rows, ok = unit_rows(w_dec)
    if (~ok).any():
        log.warning("W_dec: %d zero rows left out of the map", int((~ok).sum()))
    n = int(ok.sum())
    if n <= cfg.n_neighbors:
        raise InputError(f"W_dec: {n} nonzero rows; UMAP with n_neighbors={cfg.n_neighbors} "
                         "needs more")
    log.info("UMAP of %d decoder rows (d=%d, metric %s, %d neighbours, min_dist %g, seed %d)",
             n, w_dec.shape[1], cfg.metric, cfg.n_neighbors, cfg.min_dist, cfg.seed)
    t0 = time.perf_counter()
    # With progress on, umap's own bar over its optimisation epochs and its stage lines (which
    # it prints to stdout: sent to stderr, beside our logs).
    reducer = umap.UMAP(n_neighbors=cfg.n_neighbors, min_dist=cfg.min_dist, metric=cfg.metric,
                        n_components=2, random_state=cfg.seed, verbose=progress_enabled(),
                        tqdm_kwds={"desc": "UMAP epochs", "file": sys.stderr, "dynamic_ncols": True})
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)  # seeded
        emb = reducer.fit_transform(rows[ok])
    log.info("UMAP done in %.1f s; HDBSCAN (min cluster %d, min samples %d) on the %s",
             time.perf_counter() - t0, cfg.min_cluster_size, cfg.min_samples,
             "2-D embedding" if cfg.cluster_on == "umap" else "unit decoder rows")
    t0 = time.perf_counter()
    clusterer = hdbscan.HDBSCAN(min_cluster_size=cfg.min_cluster_size, min_samples=cfg.min_samples)
    labels = clusterer.fit_predict(emb if cfg.cluster_on == "umap" else rows[ok])
    xy = np.full((len(rows), 2), np.nan)
    xy[ok] = emb
    cluster = np.full(len(rows), -1, np.int64)
    cluster[ok] = labels
    log.info("HDBSCAN: %d clusters, %d of %d features as noise (%.1f s)", len(set(labels) - {-1}),
             int((labels == -1).sum()), n, time.perf_counter() - t0)
    return FeatureMap(xy, cluster)
