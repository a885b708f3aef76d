"""The ``analysis:`` section of a config: UMAP + HDBSCAN of decoder rows, spatial statistics."""

from __future__ import annotations

import dataclasses
from typing import Literal

from interplm_jax.config import option


@dataclasses.dataclass(frozen=True)
class UmapConfig:
    """UMAP of the unit-normalized decoder rows, then HDBSCAN clusters (paper values)."""

    n_neighbors: int = option(15, "UMAP: number of neighbours.")
    min_dist: float = option(0.1, "UMAP: minimum distance between embedded points.")
    metric: str = option("cosine", "UMAP: metric on the decoder rows.")
    seed: int = option(0, "UMAP random_state (a seed makes UMAP deterministic, single-threaded).")
    min_cluster_size: int = option(5, "HDBSCAN: minimum cluster size.")
    min_samples: int = option(3, "HDBSCAN: min_samples.")
    cluster_on: Literal["umap", "decoder"] = option(
        "umap", "What HDBSCAN clusters: the 2-D UMAP embedding (what the map shows) or the "
                "unit decoder rows themselves (Euclidean on unit vectors, i.e. cosine).")

    def __post_init__(self):
        if self.n_neighbors < 2:
            raise ValueError(f"n_neighbors must be >= 2, got {self.n_neighbors}")
        if not 0 <= self.min_dist:
            raise ValueError(f"min_dist must be >= 0, got {self.min_dist}")
        if self.min_cluster_size < 2 or self.min_samples < 1:
            raise ValueError("min_cluster_size must be >= 2 and min_samples >= 1")


@dataclasses.dataclass(frozen=True)
class SpatialConfig:
    """Sequential vs structural clustering of feature activations (DESIGN.md section 4, Q10-Q11)."""

    threshold: float = option(0.6, "A protein counts for a feature when some normalized activation"
                                   " is strictly above this.")
    min_proteins: int = option(25, "Features with fewer such proteins (with complete structures)"
                                   " are not tested.")
    max_proteins: int = option(100, "At most this many of them are sampled per feature (seeded).")
    seq_window: int = option(2, "Sequential neighbours: |j - pos_max| <= this, j != pos_max.")
    radius: float = option(6.0, "Structural neighbours: C-alpha distance to pos_max <= this"
                                " (Angstrom), j != pos_max.")
    n_permutations: int = option(5, "Permutations of a protein's activations for the null score.")
    alpha: float = option(0.05, "Significance level of the Bonferroni-corrected P values.")
    alternative: Literal["two-sided", "greater", "less"] = option(
        "two-sided", "Alternative of the paired t-tests (scipy.stats.ttest_rel).")
    seed: int = option(0, "Seed of the protein sampling and of the permutations.")
    batch_tokens: int = option(4096, "Padded tokens (proteins x longest length) per batch; peak"
                                        " memory is at most about 15 x batch_tokens x F bytes.")

    def __post_init__(self):
        if self.min_proteins < 2:
            raise ValueError(f"min_proteins must be >= 2 (a t-test needs 2), "
                             f"got {self.min_proteins}")
        if self.max_proteins < self.min_proteins:
            raise ValueError("max_proteins must be >= min_proteins")
        if self.seq_window < 1 or self.radius <= 0 or self.n_permutations < 1:
            raise ValueError("seq_window, radius and n_permutations must be positive")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.batch_tokens < 1:
            raise ValueError("batch_tokens must be positive")


@dataclasses.dataclass(frozen=True)
class AnalysisConfig:
    """The ``analysis:`` section: ``umap:`` and ``spatial:`` sub-sections."""

    umap: UmapConfig = option(default_factory=UmapConfig, help="UMAP + HDBSCAN of decoder rows.")
    spatial: SpatialConfig = option(default_factory=SpatialConfig,
                                    help="Sequential/structural clustering statistics.")
