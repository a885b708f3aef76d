"""Feature functions for the F1 engine: (n, d) activations -> (n, F) feature activations.

Both go through ``interplm_jax.sae.features.feature_function``:

- :func:`sae_features`: an SAE directory (``interplm_jax.sae_dir``, any architecture);
  ``normalized=False`` sets ``scale`` to 1 (the reference compares raw activations: the Q5 flag).
- :func:`neuron_features`: the neuron baseline (Q8), the identity SAE of
  ``interplm_jax.normalize.neuron_sae``: each neuron min-max scaled, clip((x - lo) / (hi - lo), 0, 1)
  (in [0, 1] on the normalization set); ``lo=None`` passes neurons through unchanged (the
  reference). The neuron-baseline SAE directory that ``scripts/normalize.py`` writes works
  through :func:`sae_features` too.
"""

from __future__ import annotations

import os

import numpy as np

from interplm_jax.normalize import neuron_sae
from interplm_jax.sae.features import Features, feature_function
from interplm_jax.sae_dir import load_sae


def sae_features(path: str | os.PathLike, normalized: bool = True) -> tuple[Features, int, str, dict]:
    """``(features, n_features, arch, meta)`` of the SAE directory at ``path``; ``meta`` is
    the ``meta`` of its ``sae.json``."""
    sae = load_sae(path)
    params = sae.params
    if not normalized:
        params = {**params, "scale": np.ones(sae.n_features, np.float32)}
    return feature_function(sae.arch, params, bucket=1024), sae.n_features, sae.arch, sae.meta


def neuron_features(lo: np.ndarray | None = None, hi: np.ndarray | None = None) -> Features:
    """Neuron baseline: clip((x - lo) / (hi - lo), 0, 1) per neuron (0 where hi == lo); with
    ``lo=None`` the raw neuron values."""
    if lo is None:
        return lambda x: np.asarray(x, np.float32)
    sae = neuron_sae(lo, hi)
    return feature_function(sae.arch, sae.params, bucket=1024)
