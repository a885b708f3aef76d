"""The neuron baseline as an SAE architecture (DESIGN.md section 5, Q8).

Its leaves are the ReLU SAE's: an identity encoder and decoder, ``b_pre`` the per-neuron minimum
and ``scale`` = 1 / (max - min) over the normalization set (0 for a constant neuron), built by
``interplm_jax.normalize.neuron_sae``. Inference clips to [0, 1], so a neuron's value outside the
set's range is clipped at both ends. It is never trained.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import Array

from interplm_jax.sae import relu
from interplm_jax.sae._spec import Architecture
from interplm_jax.sae._types import Params

CLIP = 1.0
"""Inference values are clipped to at most this (the top of the normalization set's range)."""


def init(key: Array, d: int, F: int) -> Params:
    """The identity (unscaled) neuron baseline; F must equal d. ``key`` is unused."""
    if F != d:
        raise ValueError(f"the neuron baseline has one feature per neuron: F={F} != d={d}")
    eye = jnp.eye(d, dtype=jnp.float32)
    zeros = jnp.zeros(d, jnp.float32)
    return {"b_pre": zeros, "W_enc": eye, "b_enc": zeros, "W_dec": eye, "scale": jnp.ones(d, jnp.float32)}


def encode(params: Params, x: Array) -> Array:
    """f = min(ReLU(x - b_pre) * scale, 1) per neuron. x: (B, d) -> (B, d)."""
    return jnp.minimum(relu.encode(params, x), CLIP)


SPEC = Architecture(
    name="neuron",
    title="neuron baseline",
    init=init,
    encode=encode,
    decode=relu.decode,
    loss=None,  # never trained (and never exported to torch formats: it is not an SAE)
    trainable=(),
    clip=CLIP,
    square=True,
)
