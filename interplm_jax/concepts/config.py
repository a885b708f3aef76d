"""The ``concepts:`` section of a run config (defaults are the paper's)."""

from __future__ import annotations

import dataclasses
from typing import Literal, Optional

from interplm_jax.config import option
from interplm_jax.concepts.f1 import DEFAULT_THRESHOLDS, check_thresholds


@dataclasses.dataclass(frozen=True)
class ConceptsConfig:
    """Swiss-Prot concept evaluation (DESIGN.md section 4, Q2-Q5)."""

    min_instances: int = option(100, "A categorical value (e.g. a domain name) becomes a concept when it occurs at least this often.")
    max_length: int = option(1022, "Longest protein kept (residues; ESM-2 takes 1,022 plus <cls>/<eos>).")
    require_alphafold: bool = option(True, "Keep only proteins with an AlphaFold DB cross-reference (reference).")
    drop_duplicates: bool = option(True, "Keep the first of proteins with identical sequences (reference).")
    amino_acids: bool = option(True, "Add amino_acid_<X> concepts (computed, never reported).")
    reference_parsing: bool = option(False, "Reproduce the reference's parser: values from /note only (Binding site concepts empty), occurrences without a frequent value left out of <column>_any.")
    on_malformed: Literal["error", "skip"] = option("error", "A malformed TSV row: stop (error) or leave it out and report it (skip).")
    n_proteins: Optional[int] = option(50000, "Proteins sampled for the evaluation set (valid + test); null = all.")
    seed: int = option(0, "Seed of the sample and the split.")
    valid_fraction: float = option(0.5, "Fraction of the sample in valid (the rest is test).")
    select_fraction: float = option(0.2, "Fraction of valid used to select the best SAE per layer.")
    min_domains: int = option(10, "Keep a concept with more than this many domains ...")
    min_residues: int = option(1500, "... or more than this many labelled residues (reference: 25 domains over valid+test).")
    count_on: Literal["valid", "valid+test"] = option("valid", "Where the kept-concept counts are made (reference: valid+test).")
    thresholds: tuple[float, ...] = option(DEFAULT_THRESHOLDS, "Activation thresholds (feature on = activation > threshold).")
    activations: Literal["normalized", "raw"] = option("normalized", "Thresholds apply to normalized (paper) or raw (reference) SAE activations.")
    reference_test: bool = option(False, "Re-pick the threshold on test and average only concepts with a test TP (reference report).")
    top_f1: float = option(0.5, "F1 above which a (feature, concept) pair counts as found.")
    chunk_residues: int = option(8192, "Residues per chunk of the F1 pass (memory: chunk x features floats).")

    def __post_init__(self):
        check_thresholds(self.thresholds)
        if self.min_instances < 1:
            raise ValueError("min_instances must be >= 1")
        if self.chunk_residues < 1:
            raise ValueError("chunk_residues must be >= 1")
