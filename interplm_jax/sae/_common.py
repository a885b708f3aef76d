"""Pieces shared by the architectures: torch-compatible initialisers, k-th largest, matmuls."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import Array


def torch_linear_uniform(key: Array, fan_in: int, shape: tuple[int, ...]) -> Array:
    """``nn.Linear``'s default weight init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

    (kaiming_uniform with a=sqrt(5), as torch does it; ``fan_in`` = the layer's input size.)
    """
    bound = 1.0 / math.sqrt(fan_in)
    return jax.random.uniform(key, shape, jnp.float32, -bound, bound)


def torch_kaiming_uniform(key: Array, fan_in: int, shape: tuple[int, ...]) -> Array:
    """``nn.init.kaiming_uniform_`` with its defaults (a=0, leaky_relu gain sqrt(2))."""
    bound = math.sqrt(2.0) * math.sqrt(3.0 / fan_in)
    return jax.random.uniform(key, shape, jnp.float32, -bound, bound)


def unit_rows(w: Array, eps: float = 0.0) -> Array:
    """Each row divided by (its L2 norm + eps). w: matrix of shape (F, d)."""
    return w / (jnp.linalg.norm(w, axis=-1, keepdims=True) + eps)


def kth_largest(values: Array, k: Array, k_max: int) -> Array:
    """The k-th largest entry along the last axis (k may be traced, 1 <= k <= k_max).

    values: (..., n); k: integer scalar; returns shape (...,). Uses ``lax.top_k`` with the
    static ``k_max`` so that k can differ between the SAEs of a vmapped grid.
    """
    top, _ = jax.lax.top_k(values, k_max)
    return jnp.take(top, k - 1, axis=-1)


def matmul(a: Array, b: Array, dtype: jnp.dtype | None = None) -> Array:
    """a @ b, optionally with inputs cast to ``dtype`` (e.g. bfloat16) and float32 accumulation."""
    if dtype is None or jnp.dtype(dtype) == jnp.float32:
        return a @ b
    return jnp.matmul(a.astype(dtype), b.astype(dtype), preferred_element_type=jnp.float32)
