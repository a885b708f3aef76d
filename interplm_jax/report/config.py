"""The ``report:`` section of a config: what the static feature browser embeds."""

from __future__ import annotations

import dataclasses

from interplm_jax.config import option


@dataclasses.dataclass(frozen=True)
class ReportConfig:
    """Sizes of the data embedded in the HTML feature browser (``docs/report.md``)."""

    top_proteins: int = option(8, "Top proteins shown per feature (by the protein's maximum "
                                  "activation of the feature).")
    window: int = option(96, "Residues kept around a protein's strongest activation; shorter "
                             "proteins are kept whole.")
    top_concepts: int = option(5, "Best concepts listed per feature (by F1 on the counts given).")
    min_f1: float = option(0.0, "Concepts with F1 at or below this are not listed for a feature.")
    batch_rows: int = option(4096, "Tokens per encoder call when reading the store (raise on "
                                   "GPU/TPU).")
    max_name_chars: int = option(80, "Protein names from the metadata TSV are cut to this length.")
    top_structures: int = option(2, "Per feature, the strongest proteins of the structure store "
                                    "shown whole in 3-D (0: none).")
    concept_features: int = option(10, "Concept view: best features listed per concept (SAE "
                                       "and each baseline).")
    label_min_f1: float = option(0.5, "A feature is labelled with its best concept only when "
                                      "that concept's F1 is above this (else 'no concept').")
    hist_bins: int = option(20, "Equal bins over (0, 1] of the histogram of every residue's "
                                "activation (plus one bar each for 0 and above 1).")
    profile_proteins: int = option(3, "Per feature, the strongest proteins longer than the "
                                      "window that also get a whole-sequence profile (0: none).")
    profile_bins: int = option(120, "Points of a whole-sequence profile (each the maximum of "
                                    "its run of residues).")

    def __post_init__(self):
        if self.top_proteins < 1:
            raise ValueError(f"top_proteins must be >= 1, got {self.top_proteins}")
        if self.window < 8:
            raise ValueError(f"window must be >= 8 residues, got {self.window}")
        if self.top_concepts < 0:
            raise ValueError(f"top_concepts must be >= 0, got {self.top_concepts}")
        if min(self.top_structures, self.profile_proteins) < 0:
            raise ValueError("top_structures and profile_proteins must be >= 0")
        if min(self.concept_features, self.hist_bins, self.profile_bins) < 1:
            raise ValueError("concept_features, hist_bins and profile_bins must be >= 1")
        if self.batch_rows < 1:
            raise ValueError(f"batch_rows must be >= 1, got {self.batch_rows}")
