"""Random SAEs of every architecture and a plain NumPy forward to check implementations against."""

from __future__ import annotations

import numpy as np

from interplm_jax.sae_dir import SavedSAE


def random_sae(arch: str, d: int = 8, F: int = 24, seed: int = 0, k: int = 4,
               normalized: bool = True) -> SavedSAE:
    """Random parameters; biased so that a good share of features fire on N(0, 1) inputs."""
    rng = np.random.default_rng(seed)
    W_dec = rng.normal(size=(F, d)).astype(np.float32)
    W_dec /= np.linalg.norm(W_dec, axis=1, keepdims=True)
    params = {"b_pre": rng.normal(scale=0.1, size=d), "W_enc": rng.normal(size=(d, F)) / np.sqrt(d),
              "b_enc": rng.normal(scale=0.1, size=F) + 0.1, "W_dec": W_dec,
              "scale": np.ones(F)}
    if normalized:
        params["scale"] = rng.uniform(0.2, 3.0, size=F)
        params["scale"][: F // 6] = 0.0  # dead features: they never fire (as normalization
        params["b_enc"][: F // 6] = -100.0  # found them), so their scale is 0
    if arch in ("topk", "batchtopk"):
        params["threshold"] = np.array(0.05 if arch == "batchtopk" else -1.0)
        params["k"] = np.array(k, np.int32)
    if arch == "jumprelu":
        params["threshold"] = rng.uniform(0.0, 0.3, size=F)
        params["b_dec"] = params.pop("b_pre")
    params = {k_: np.asarray(v, np.int32 if k_ == "k" else np.float32) for k_, v in params.items()}
    return SavedSAE(arch, params, {"lr": 1e-4}, {"layer": 2, "model": "tiny"})


def np_encode_raw(sae: SavedSAE, x: np.ndarray) -> np.ndarray:
    """The formulas of DESIGN.md section 2, written out in NumPy (float64). x: (B, d) -> (B, F)."""
    p = {k: v.astype(np.float64) for k, v in sae.params.items()}
    if sae.arch == "jumprelu":
        pre = x @ p["W_enc"] + p["b_enc"]
    else:
        pre = (x - p["b_pre"]) @ p["W_enc"] + p["b_enc"]
    f = np.maximum(pre, 0.0)
    if sae.arch == "topk":
        k = int(p["k"])
        keep = np.argsort(-f, axis=1, kind="stable")[:, :k]
        mask = np.zeros_like(f, bool)
        np.put_along_axis(mask, keep, True, axis=1)
        f = np.where(mask, f, 0.0)
    elif sae.arch == "batchtopk":
        f = f * (f > p["threshold"])
    elif sae.arch == "jumprelu":
        f = f * (pre > p["threshold"])
    return f


def np_forward(sae: SavedSAE, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(normalized features (B, F), reconstruction (B, d)) in float64."""
    f = np_encode_raw(sae, x)
    bias = sae.params["b_dec"] if sae.arch == "jumprelu" else sae.params["b_pre"]
    return f * sae.params["scale"], f @ sae.params["W_dec"].astype(np.float64) + bias
