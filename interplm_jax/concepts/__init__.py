"""Swiss-Prot concept evaluation: UniProt annotations -> per-residue labels, F1 of every
(feature, concept, threshold), model selection and the test report (DESIGN.md sections 4-5;
docs/concepts.md)."""

from interplm_jax.concepts.evalset import EvalSet, make_eval_set
from interplm_jax.concepts.f1 import DEFAULT_THRESHOLDS, ConceptCounts, CountAccumulator
from interplm_jax.concepts.labels import ConceptLabels, build_labels
from interplm_jax.concepts.metrics import (heldout_report, mean_best_f1, scores, select_best,
                                          best_thresholds)
from interplm_jax.concepts.stream import count_split
from interplm_jax.concepts.uniprot import ParseReport, read_uniprot_tsv

__all__ = ["ConceptCounts", "ConceptLabels", "CountAccumulator", "DEFAULT_THRESHOLDS", "EvalSet",
           "ParseReport", "best_thresholds", "build_labels", "count_split", "heldout_report",
           "make_eval_set", "mean_best_f1", "read_uniprot_tsv", "scores", "select_best"]
