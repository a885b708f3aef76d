"""The SAE an analysis reads: its parameters from disk, and a jitted feature function.

Accepted: an SAE directory (``sae.json`` with ``arch`` + ``params.safetensors``, the project's
SAE directory layout), or a single ``.safetensors`` / ``.npz`` file of the parameter leaves
(``b_pre``, ``W_enc``, ``b_enc``, ``W_dec``, ``scale``, ...; ReLU unless ``arch`` says otherwise).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import numpy as np

from interplm_jax.errors import InputError

REQUIRED = ("W_enc", "W_dec")


def load_params(path: str | os.PathLike,
                arch: str | None = None) -> tuple[str, dict[str, np.ndarray]]:
    """(architecture, parameter dict of NumPy arrays) of the SAE at ``path``."""
    path = Path(path)
    if path.is_dir():
        meta_file, params_file = path / "sae.json", path / "params.safetensors"
        if not params_file.is_file():
            raise InputError(f"{path}: not an SAE directory (no params.safetensors)")
        if meta_file.is_file():
            try:
                arch = arch or json.loads(meta_file.read_text())["arch"]
            except (ValueError, KeyError) as e:
                raise InputError(f"{meta_file}: cannot read the architecture ({e})") from None
        path = params_file
    if not path.is_file():
        raise InputError(f"{path}: SAE parameters not found")
    try:
        if path.suffix == ".npz":
            with np.load(path) as z:
                params = {k: z[k] for k in z.files}
        elif path.suffix == ".safetensors":
            from safetensors.numpy import load_file

            params = load_file(str(path))
        else:
            raise InputError(f"{path}: expected an SAE directory, .safetensors or .npz")
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: cannot read SAE parameters: {e}") from None
    missing = [k for k in REQUIRED if k not in params]
    if missing:
        raise InputError(f"{path}: missing parameter(s) {missing}; found {sorted(params)}")
    if params["W_dec"].ndim != 2 or params["W_enc"].shape[::-1] != params["W_dec"].shape:
        raise InputError(f"{path}: W_enc {params['W_enc'].shape} and W_dec "
                         f"{params['W_dec'].shape} are not (d, F) and (F, d)")
    # floating leaves as float32; integer leaves (e.g. TopK's k) keep their type
    return arch or "relu", {k: np.asarray(v, np.float32) if np.issubdtype(v.dtype, np.floating)
                            else np.asarray(v) for k, v in params.items()}


def _encode_fn(arch: str) -> Callable:
    try:
        from interplm_jax import sae
    except ImportError:  # the architectures module is not installed: plain ReLU only
        sae = None
    if sae is not None:
        return sae.get(arch).encode
    if arch != "relu":
        raise InputError(f"SAE architecture {arch!r} needs interplm_jax.sae")
    import jax

    def relu_encode(params, x):  # DESIGN.md section 2: ReLU((x - b_pre) W_enc + b_enc) * scale
        pre = (x - params["b_pre"]) @ params["W_enc"] + params["b_enc"]
        return jax.nn.relu(pre) * params["scale"]

    return relu_encode


def feature_function(params: dict[str, np.ndarray], arch: str = "relu",
                     bucket: int = 512) -> Callable[[np.ndarray], np.ndarray]:
    """``features(x (n, d)) -> (n, F)`` NumPy float32, jit-compiled; rows padded to a multiple
    of ``bucket`` so that proteins of many lengths share a few compilations."""
    import jax
    import jax.numpy as jnp

    encode = jax.jit(_encode_fn(arch))
    dev = {k: jnp.asarray(v) for k, v in params.items()}

    def features(x: np.ndarray) -> np.ndarray:
        n = len(x)
        padded = np.zeros((-(-max(n, 1) // bucket) * bucket, x.shape[1]), np.float32)
        padded[:n] = x
        return np.asarray(encode(dev, padded))[:n]

    return features
