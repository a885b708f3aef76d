"""LLM annotation of SAE features (descriptions validated by predicted activations) and
categorisation of Swiss-Prot concepts, through Claude (the ``anthropic`` SDK).

Stages (``scripts/annotate.py``): :func:`run_features`, :func:`run_validate`,
:func:`run_categorise`. Building blocks: :func:`select_examples` (example proteins per
feature), :class:`LLM` (cached, concurrent, retrying requests), :func:`pearson_r`.
See docs/annotation.md.
"""

from interplm_jax.annotate.config import AnnotateConfig
from interplm_jax.annotate.llm import LLM, Outcome, ParseError, Request
from interplm_jax.annotate.pipeline import run_categorise, run_features, run_validate
from interplm_jax.annotate.select import Selection, sample_features, select_examples
from interplm_jax.annotate.validate import pearson_r

__all__ = ["AnnotateConfig", "LLM", "Outcome", "ParseError", "Request", "Selection",
           "pearson_r", "run_categorise", "run_features", "run_validate", "sample_features",
           "select_examples"]
