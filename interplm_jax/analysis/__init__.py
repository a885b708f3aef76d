"""Feature geometry and spatial organisation (DESIGN.md section 4; docs/analysis.md).

- :mod:`~interplm_jax.analysis.geometry`: UMAP + HDBSCAN of the unit-normalized decoder rows.
- :mod:`~interplm_jax.analysis.structures`: AlphaFold DB C-alpha traces (gemmi), completeness.
- :mod:`~interplm_jax.analysis.spatial`: per (protein, feature) sequential/structural scores,
  vectorized over proteins (pad and mask), features and permutations.
- :mod:`~interplm_jax.analysis.stats`: per-feature paired t-tests, Cohen's d, Bonferroni, flags.
- :mod:`~interplm_jax.analysis.run`: both analyses from files to tables and PNGs.

>>> from interplm_jax.analysis import run_spatial, run_umap
"""

from interplm_jax.analysis.config import AnalysisConfig, SpatialConfig, UmapConfig

__all__ = ["AnalysisConfig", "SpatialConfig", "UmapConfig", "run_spatial", "run_umap"]


def __getattr__(name):  # run_* on first use: scipy.stats, gemmi, umap load only when needed
    if name in ("run_spatial", "run_umap"):
        from interplm_jax.analysis import run

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
