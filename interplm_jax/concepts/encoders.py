"""Feature functions for the F1 engine: (n, d) activations -> (n, F) feature activations.

- :func:`sae_features`: an SAE on disk (any architecture ``interplm_jax.analysis.sae_io``
  reads), jit-compiled; ``normalized=False`` sets ``scale`` to 1 (the reference compares raw
  activations: the Q5 flag).
- :func:`neuron_features`: the neuron baseline, each neuron min-max scaled to [0, 1] and
  clipped (Q8); ``lo=None`` passes neurons through unchanged (the reference). The issue-4
  neuron-baseline SAE directory (identity SAE with the same scaling) works through
  :func:`sae_features` too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import numpy as np

from interplm_jax.analysis.sae_io import feature_function, load_params

Features = Callable[[np.ndarray], np.ndarray]


def sae_features(path: str | os.PathLike, normalized: bool = True) -> tuple[Features, int, str, dict]:
    """``(features, n_features, arch, meta)`` of the SAE at ``path`` (directory or parameter
    file); ``meta`` is the ``meta`` of ``sae.json`` when there is one."""
    arch, params = load_params(path)
    if not normalized:
        params = {**params, "scale": np.ones(params["W_enc"].shape[1], np.float32)}
    meta = {}
    meta_file = Path(path) / "sae.json"
    if meta_file.is_file():
        meta = json.loads(meta_file.read_text()).get("meta") or {}
    return feature_function(params, arch, bucket=1024), int(params["W_enc"].shape[1]), arch, meta


def neuron_features(lo: np.ndarray | None = None, hi: np.ndarray | None = None) -> Features:
    """Neuron baseline: (x - lo) / (hi - lo) clipped to [0, 1] per neuron (0 where hi == lo);
    with ``lo=None`` the raw neuron values."""
    if lo is None:
        return lambda x: np.asarray(x, np.float32)
    lo = np.asarray(lo, np.float32)
    span = np.asarray(hi, np.float32) - lo
    inv = np.divide(1.0, span, out=np.zeros_like(span), where=span > 0)

    def scale(x: np.ndarray) -> np.ndarray:
        return np.clip((np.asarray(x, np.float32) - lo) * inv, 0.0, 1.0)

    return scale
