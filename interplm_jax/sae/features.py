"""An SAE's inference features as a NumPy function of token rows: the one feature function.

``feature_function(arch, params)`` (or ``feature_function(sae.arch, sae.params)`` for a
:class:`interplm_jax.sae_dir.SavedSAE`) returns ``features(x)``: x (n, d) -> (n, F) float32,
the jitted ``interplm_jax.sae.get(arch).encode`` (scale applied) for every architecture. Rows
are zero-padded to a multiple of ``bucket`` so that inputs of many lengths (proteins) share a
few compilations; padding rows are dropped (every architecture encodes rows independently at
inference).
"""

from __future__ import annotations

from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from interplm_jax import sae

Features = Callable[[np.ndarray], np.ndarray]

#: ``encode(arch, params, x (n, d)) -> (n, F)``, jit-compiled once per architecture and shape.
encode = jax.jit(sae.encode, static_argnums=0)


def pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
    """x (n, d) as float32 with zero rows appended up to (rows, d)."""
    padded = np.zeros((rows, x.shape[1]), np.float32)
    padded[: len(x)] = x
    return padded


def feature_function(arch: str, params: Mapping[str, np.ndarray], bucket: int = 512) -> Features:
    """``features(x (n, d)) -> (n, F)`` NumPy float32 of the SAE (``arch``, ``params``).

    Args:
      arch: "relu", "topk", "batchtopk", "jumprelu" or "neuron" (see ``interplm_jax.sae``).
      params: its leaves (NumPy or JAX arrays; e.g. ``SavedSAE.params``).
      bucket: rows are padded to a multiple of this.
    """
    sae.get(arch)  # an unknown architecture fails here, not at the first call
    dev = {k: jnp.asarray(v) for k, v in params.items()}

    def features(x: np.ndarray) -> np.ndarray:
        n = len(x)
        rows = -(-max(n, 1) // bucket) * bucket
        return np.asarray(encode(arch, dev, pad_rows(x, rows)))[:n]

    return features
