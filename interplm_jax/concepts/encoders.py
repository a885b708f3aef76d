"""Feature functions for the F1 engine: (n, d) activations -> (n, F) feature activations.

- :func:`sae_features`: a ReLU SAE, f = ReLU((x - b_pre) W_enc + b_enc) * scale (DESIGN.md
  section 2), jit-compiled, in fixed-size row blocks so one compilation serves every chunk.
  ``normalized=False`` drops ``scale`` (the reference compares raw activations: Q5 flag).
- :func:`neuron_features`: the neuron baseline, each neuron min-max scaled to [0, 1] and
  clipped (Q8); ``lo=None`` passes neurons through unchanged (the reference).
- :func:`load_sae_dir`: parameters of an SAE directory (``sae.json`` + ``params.safetensors``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from interplm_jax.errors import InputError

Features = Callable[[np.ndarray], np.ndarray]


def _blocked(fn: Callable, block: int) -> Features:
    """Apply a jitted row-wise ``fn`` in blocks of ``block`` rows (last block zero-padded)."""
    def apply(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        n = x.shape[0]
        out = []
        for s in range(0, n, block):
            part = x[s:s + block]
            if part.shape[0] < block:
                part = np.concatenate([part, np.zeros((block - part.shape[0], x.shape[1]), np.float32)])
            out.append(np.asarray(fn(part)))
        return np.concatenate(out)[:n] if out else np.zeros((0,), np.float32)
    return apply


def sae_features(params: dict, normalized: bool = True, block: int = 4096) -> Features:
    """Encoder of a ReLU SAE (see the module docstring). params: b_pre (d,), W_enc (d, F),
    b_enc (F,), scale (F,) (W_dec unused)."""
    for k in ("b_pre", "W_enc", "b_enc"):
        if k not in params:
            raise InputError(f"SAE parameters lack {k!r}")
    p = {k: jnp.asarray(params[k], jnp.float32) for k in ("b_pre", "W_enc", "b_enc")}
    F = p["W_enc"].shape[1]
    scale = jnp.asarray(params.get("scale", np.ones(F)), jnp.float32) if normalized else jnp.ones(F)

    @jax.jit
    def encode(x):  # x: (block, d) -> (block, F)
        pre = (x - p["b_pre"]) @ p["W_enc"] + p["b_enc"]
        return jax.nn.relu(pre) * scale

    return _blocked(encode, block)


def neuron_features(lo: np.ndarray | None = None, hi: np.ndarray | None = None,
                    block: int = 4096) -> Features:
    """Neuron baseline: (x - lo) / (hi - lo) clipped to [0, 1] per neuron (0 where hi == lo);
    with ``lo=None`` the raw neuron values."""
    if lo is None:
        return lambda x: np.asarray(x, np.float32)
    lo_, span = jnp.asarray(lo, jnp.float32), jnp.asarray(np.asarray(hi) - np.asarray(lo), jnp.float32)

    @jax.jit
    def scale(x):
        safe = jnp.where(span > 0, span, 1.0)
        return jnp.where(span > 0, jnp.clip((x - lo_) / safe, 0.0, 1.0), 0.0)

    return _blocked(scale, block)


def load_sae_dir(path: str | os.PathLike) -> tuple[str, dict[str, np.ndarray], dict]:
    """``(arch, params, meta)`` of an SAE directory (``sae.json`` + ``params.safetensors``)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(path)
    meta_path, params_path = path / "sae.json", path / "params.safetensors"
    if not meta_path.exists() or not params_path.exists():
        raise InputError(f"{path}: not an SAE directory (needs sae.json and params.safetensors)")
    try:
        meta = json.loads(meta_path.read_text())
        params = load_file(str(params_path))
    except (ValueError, SafetensorError, OSError) as e:
        raise InputError(f"{path}: cannot read the SAE ({e})") from None
    return meta.get("arch", "relu"), params, meta
