"""Types shared by the architectures."""

from __future__ import annotations

from typing import Any, NamedTuple

from jax import Array

Params = dict[str, Array]
"""One SAE's parameters and buffers by name (a sweep stacks G of them on a leading axis)."""


class StepContext(NamedTuple):
    """What a training loss needs besides parameters, batch and hyperparameters.

    Built inside the (vmapped) step for one SAE.
    """

    step: Array
    """0-based index of the update being computed (int32 scalar)."""
    sparsity_scale: Array
    """Warmup factor in [0, 1] of the sparsity penalty at this step."""
    dead: Array
    """(F,) bool: features dead unless they fire on this batch (silent for ``dead_tokens`` tokens
    counting it; the TopK auxiliary loss removes those that fire)."""
    k_max: int = 1
    """Static upper bound of k over the grid (TopK, BatchTopK)."""
    matmul_dtype: Any = None
    """None/float32, or bfloat16 for bf16 matmuls with float32 accumulation."""


class LossAux(NamedTuple):
    """Side outputs of a training loss."""

    x_hat: Array
    """(B, d) reconstruction."""
    f: Array
    """(B, F) features as used in the reconstruction."""
    fired: Array
    """(F,) bool: features that fired on this batch (for the dead-feature counters)."""
    parts: dict[str, Array]
    """Named scalar loss parts for the metrics."""


LossOutput = tuple[Array, LossAux]
