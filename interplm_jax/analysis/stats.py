"""Per-feature tests of sequential and structural clustering (DESIGN.md section 4, Q10, Q11).

For each feature: the proteins whose maximum normalized activation exceeds the threshold (and
that have complete structures) are its candidates; with at least ``min_proteins`` of them, at
most ``max_proteins`` are sampled (seeded by (seed, feature)); proteins without a structural or
sequential neighbour are dropped (Q10, counted in ``n_dropped``); the observed scores are compared
with their null scores by a paired t-test (``scipy.stats.ttest_rel``), once for sequential and
once for structural neighbours. Cohen's d = mean(diff) / sd(diff) (sd with ddof = 1, so that
t = d sqrt(n)); ``struct_seq_ratio`` = |d_struct| / |d_seq| (as InterPLM's dashboard). P values
are multiplied by the number of features tested in the layer and capped at 1 (Bonferroni, Q11);
a feature is *structural-only* when its corrected structural P < alpha and its corrected
sequential P > alpha.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings

import numpy as np
import scipy.stats

from interplm_jax.analysis.spatial import PairScores

log = logging.getLogger(__name__)

COLUMNS = ("feature", "n_candidates", "n_sampled", "n_dropped", "n_used", "tested",
           "seq_obs_mean", "seq_null_mean", "seq_t", "seq_p", "seq_d", "seq_p_bonferroni",
           "struct_obs_mean", "struct_null_mean", "struct_t", "struct_p", "struct_d",
           "struct_p_bonferroni", "struct_seq_ratio", "seq_significant", "struct_significant",
           "structural_only")


def sample_proteins(n_candidates: int, max_proteins: int, seed: int, feature: int) -> np.ndarray:
    """Indices (sorted) of at most ``max_proteins`` of ``n_candidates``, seeded per feature."""
    if n_candidates <= max_proteins:
        return np.arange(n_candidates)
    rng = np.random.default_rng([seed, feature])
    return np.sort(rng.choice(n_candidates, size=max_proteins, replace=False))


def paired_tests(obs: np.ndarray, null: np.ndarray, n: np.ndarray,
                 alternative: str = "two-sided") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paired t-tests of many features at once.

    Args:
      obs, null: (T, N) scores; row t holds ``n[t]`` valid values first, then anything.
      n: (T,) valid counts (>= 2).
    Returns:
      t statistics, P values and Cohen's d, each (T,). Rows sharing a count go through one
      vectorized ``scipy.stats.ttest_rel`` call; constant differences give NaN.
    """
    T = len(n)
    t, p, d = (np.full(T, np.nan) for _ in range(3))
    for count in np.unique(n):
        rows = np.flatnonzero(n == count)
        a, b = obs[rows, :count], null[rows, :count]
        with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            res = scipy.stats.ttest_rel(a, b, axis=1, alternative=alternative)
            diff = a - b
            sd = diff.std(axis=1, ddof=1)
            d[rows] = np.where(sd > 0, diff.mean(axis=1) / np.where(sd > 0, sd, 1), np.nan)
        t[rows], p[rows] = res.statistic, res.pvalue
    return t, p, d


def bonferroni(p: np.ndarray, n_tests: int) -> np.ndarray:
    """P values multiplied by ``n_tests`` and capped at 1 (NaN stays NaN)."""
    return np.minimum(p * n_tests, 1.0)


def feature_tests(pairs: PairScores, n_features: int, *, min_proteins: int, max_proteins: int,
                  alpha: float, seed: int, alternative: str = "two-sided") -> dict[str, np.ndarray]:
    """The per-feature table (columns :data:`COLUMNS`, one row per feature 0..F-1)."""
    order = np.lexsort((pairs.protein, pairs.feature))
    feat = pairs.feature[order]
    starts = np.searchsorted(feat, np.arange(n_features + 1))
    n_cand = np.diff(starts)

    out = {c: np.full(n_features, np.nan) for c in COLUMNS}
    out["feature"] = np.arange(n_features)
    out["n_candidates"] = n_cand
    for c in ("n_sampled", "n_dropped", "n_used"):
        out[c] = np.zeros(n_features, np.int64)

    eligible = np.flatnonzero(n_cand >= min_proteins)
    rows = np.zeros((len(eligible), max_proteins), np.int64)
    used = np.zeros(len(eligible), np.int64)
    for r, f in enumerate(eligible):  # a loop over features, only to draw each one's sample
        chosen = order[starts[f] + sample_proteins(n_cand[f], max_proteins, seed, f)]
        keep = chosen[(pairs.n_struct[chosen] > 0) & (pairs.n_seq[chosen] > 0)]
        out["n_sampled"][f], out["n_dropped"][f] = len(chosen), len(chosen) - len(keep)
        rows[r, : len(keep)], used[r] = keep, len(keep)
    out["n_used"][eligible] = used

    tested_mask = used >= 2
    tested = eligible[tested_mask]
    rows, used = rows[tested_mask], used[tested_mask]
    valid = np.arange(max_proteins)[None, :] < used[:, None]
    out["tested"] = np.zeros(n_features, bool)
    out["tested"][tested] = True
    for kind in ("seq", "struct"):
        obs = getattr(pairs, f"{kind}_obs")[rows]
        null = getattr(pairs, f"{kind}_null")[rows]
        t, p, d = paired_tests(obs, null, used, alternative)
        out[f"{kind}_obs_mean"][tested] = np.where(valid, obs, 0).sum(1) / used
        out[f"{kind}_null_mean"][tested] = np.where(valid, null, 0).sum(1) / used
        out[f"{kind}_t"][tested], out[f"{kind}_p"][tested], out[f"{kind}_d"][tested] = t, p, d
        out[f"{kind}_p_bonferroni"] = bonferroni(out[f"{kind}_p"], len(tested))
        out[f"{kind}_significant"] = out[f"{kind}_p_bonferroni"] < alpha
    with np.errstate(invalid="ignore", divide="ignore"):  # |d| ratio, as InterPLM's dashboard
        ratio = np.abs(out["struct_d"]) / np.abs(out["seq_d"])
    out["struct_seq_ratio"] = np.where(np.isfinite(ratio), ratio, np.nan)
    out["structural_only"] = out["struct_significant"] & (out["seq_p_bonferroni"] > alpha)
    log.info("spatial tests: %d features tested (>= %d proteins), %d structural-only, "
             "%d sequentially and %d structurally significant", len(tested), min_proteins,
             int(out["structural_only"].sum()), int(out["seq_significant"].sum()),
             int(out["struct_significant"].sum()))
    return out


@dataclasses.dataclass(frozen=True)
class Summary:
    """Counts over a layer's table."""

    n_features: int
    n_tested: int
    n_seq_significant: int
    n_struct_significant: int
    n_structural_only: int

    @classmethod
    def of(cls, table: dict[str, np.ndarray]) -> "Summary":
        return cls(len(table["feature"]), int(table["tested"].sum()),
                   int(table["seq_significant"].sum()), int(table["struct_significant"].sum()),
                   int(table["structural_only"].sum()))
