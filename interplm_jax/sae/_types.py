"""Types shared by the architectures."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
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
    decoder: str = "dense"
    """TopK decoder: ``dense`` (f W_dec), ``sparse`` (gather the k active rows, scatter-add
    backward; :mod:`interplm_jax.sae.sparse`) or ``auto`` (sparse when k_max <= F / 32)."""
    pre: Array | None = None
    """(B, F) encoder product (pre-activations without b_enc) computed by the step before the
    loss (ReLU, JumpReLU with a sparse branch), without gradient; None: the loss computes it."""
    active: Any = None
    """The batch's active entries (:class:`sparse.Entries`, from :func:`sparse.compact`) when
    this step decodes sparsely; None: dense."""


def nonzero_counts(f: Array) -> Array:
    """(F,) float32 number of nonzero entries of each column of f: (B, F).

    Written as sum(sign(|f|)) rather than sum(f != 0): XLA on the CPU fuses the former into
    the reduction but materialises the (B, F) mask of the latter (2x faster on 2048 x 10240).
    """
    return jnp.sum(jnp.sign(jnp.abs(f)), axis=0)


class LossAux(NamedTuple):
    """Side outputs of a training loss."""

    x_hat: Array
    """(B, d) reconstruction."""
    f: Array
    """(B, F) features as used in the reconstruction."""
    counts: Array
    """(F,) float32: tokens of the batch on which each feature is nonzero (feature fired iff
    > 0; L0 = counts.sum() / B)."""
    parts: dict[str, Array]
    """Named scalar loss parts for the metrics."""
    row_min: Array | None = None
    """(B,) smallest positive kept activation of each row (inf if none), when the loss has it
    without a pass over f (the sparse TopK path); else None."""


LossOutput = tuple[Array, LossAux]
