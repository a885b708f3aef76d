"""The ``annotate:`` section of a config: example selection, prompts, and the LLM client."""

from __future__ import annotations

import dataclasses

from interplm_jax.config import option

#: A current Claude Sonnet (the paper used Claude 3.5 Sonnet, no longer the current one).
DEFAULT_MODEL = "claude-sonnet-5-5"


@dataclasses.dataclass(frozen=True)
class SelectionConfig:
    """How each feature's example proteins are chosen (DESIGN.md section 4, Q9)."""

    feature_fraction: float = option(0.1, "Fraction of the SAE's features annotated, drawn at random.")
    seed: int = option(0, "Seed of the feature sample, the proteins drawn per bin and the split.")
    n_bins: int = option(10, "Activation bins of equal width over (0, 1]; 10 gives bins of 0.1.")
    per_bin: int = option(2, "Proteins per bin below the top bin, in each of train and eval.")
    top_bin: int = option(10, "Proteins from the top bin (0.9-1.0), in each of train and eval.")
    negatives: int = option(10, "Zero-activation proteins, in each of train and eval.")
    top_two_target: int = option(
        24, "When the top bin holds fewer than 2 x top_bin proteins, the next bin tops the two "
        "highest bins up to this many (train + eval).")
    min_top_three: int = option(
        20, "Features with fewer proteins than this in the three highest bins are excluded.")
    batch_rows: int = option(
        1024, "Tokens (whole proteins) encoded per step when computing each protein's maximum "
        "activation; 1,024 is fastest on CPU, raise it (e.g. 32,768) on a GPU or TPU.")

    def __post_init__(self):
        if not 0.0 < self.feature_fraction <= 1.0:
            raise ValueError(f"feature_fraction must be in (0, 1], got {self.feature_fraction}")
        if not 3 <= self.n_bins <= 100:
            raise ValueError(f"n_bins must be in [3, 100], got {self.n_bins}")
        if self.batch_rows < 1:
            raise ValueError(f"batch_rows must be >= 1, got {self.batch_rows}")
        for name in ("per_bin", "top_bin", "negatives", "top_two_target", "min_top_three"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


@dataclasses.dataclass(frozen=True)
class PromptConfig:
    """What the description prompt shows of each example protein."""

    position_fraction: float = option(
        0.5, "A residue counts as activated when its activation is at least this fraction of "
        "the protein's maximum for the feature.")
    max_positions: int = option(20, "Most activated residues listed per protein (the strongest).")
    max_annotation_chars: int = option(
        600, "UniProt annotations shown per protein are cut to this many characters.")
    max_sequence_chars: int = option(
        1100, "Longest sequence shown in a validation prompt (longer ones are cut, marked '...').")

    def __post_init__(self):
        if not 0.0 < self.position_fraction <= 1.0:
            raise ValueError(f"position_fraction must be in (0, 1], got {self.position_fraction}")
        if self.max_positions < 1:
            raise ValueError(f"max_positions must be >= 1, got {self.max_positions}")


@dataclasses.dataclass(frozen=True)
class LLMConfig:
    """The Anthropic Messages API client. The key is read only from ``ANTHROPIC_API_KEY``."""

    model: str = option(DEFAULT_MODEL, "Claude model name passed to the Messages API.")
    max_tokens_describe: int = option(1500, "Answer budget of a feature-description request.")
    max_tokens_validate: int = option(800, "Answer budget of a validation request.")
    max_tokens_categorise: int = option(4000, "Answer budget of a categorisation request.")
    concurrency: int = option(4, "Requests in flight at once.")
    max_retries: int = option(
        6, "Retries of one request on 408/409/429/5xx/connection errors/time-outs, with "
        "exponential backoff (the SDK's, honouring retry-after headers).")
    timeout_s: float = option(120.0, "Time-out of one HTTP request in seconds.")
    base_url: str | None = option(None, "API base URL (None: the SDK's default).")
    price_input_per_mtok: float = option(3.0, "USD per million input tokens, for estimates.")
    price_output_per_mtok: float = option(15.0, "USD per million output tokens, for estimates.")
    chars_per_token: float = option(3.5, "Characters per token assumed by --dry-run estimates.")

    def __post_init__(self):
        if not self.model:
            raise ValueError("model must be a non-empty model name")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.timeout_s <= 0 or self.chars_per_token <= 0:
            raise ValueError("timeout_s and chars_per_token must be > 0")


@dataclasses.dataclass(frozen=True)
class CategoriseConfig:
    """Concept categorisation: describe each concept, propose categories, assign each."""

    batch_size: int = option(40, "Concepts per describe/assign request.")
    min_categories: int = option(5, "Fewest categories Claude is asked to propose.")
    max_categories: int = option(15, "Most categories Claude is asked to propose.")

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 1 <= self.min_categories <= self.max_categories:
            raise ValueError("need 1 <= min_categories <= max_categories")


@dataclasses.dataclass(frozen=True)
class AnnotateConfig:
    """The ``annotate:`` section of a config file."""

    selection: SelectionConfig = option(
        default_factory=SelectionConfig, help="Example selection.")
    prompt: PromptConfig = option(default_factory=PromptConfig, help="Prompt contents.")
    llm: LLMConfig = option(default_factory=LLMConfig, help="The Anthropic client.")
    categorise: CategoriseConfig = option(
        default_factory=CategoriseConfig, help="Concept categorisation.")
