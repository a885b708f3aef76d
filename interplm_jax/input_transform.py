"""The input transform of a sweep (centring, scaling) and its folding into the saved SAEs.

With ``input_center`` the trainer sees x - mu (mu: the store's per-dimension mean, from its
statistics); with ``input_scale: sqrt_d`` it also multiplies by one constant s chosen so that the
root-mean-square token norm of what it sees is sqrt(d_model). The SAEs read back from the sweep
(``sweep_saes.read_sweep``: exports, normalization, every later stage) have the transform folded
into their parameters (:func:`fold`), so they take raw activations and their features are the
trained ones divided by s:

    relu, topk, batchtopk:  b_pre' = mu + b_pre / s,  b_enc' = b_enc / s,  threshold' = threshold / s
    jumprelu:               b_enc' = b_enc / s - mu W_enc,  b_dec' = mu + b_dec / s,  threshold' = threshold / s

(W_enc, W_dec unchanged: decoder rows stay unit norm). With s = 1 this is DESIGN.md's
b_pre' = b_pre + mu. The sweep directory keeps the transform in ``input_transform.json``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import numpy as np

from interplm_jax.errors import InputError
from interplm_jax.layout import SweepFiles
from interplm_jax.paths import AnyPath, write_atomic
from interplm_jax.store.stats import LayerStats



@dataclasses.dataclass(frozen=True)
class InputTransform:
    """x -> (x - shift) * scale, applied to every training batch. shift: (d,)."""

    shift: np.ndarray
    scale: float

    @classmethod
    def of(cls, center: bool, scale: str, stats: LayerStats) -> "InputTransform":
        """The transform a config asks for, from the layer's statistics."""
        shift = stats.mean.astype(np.float32) if center else np.zeros_like(stats.mean, np.float32)
        s = 1.0
        if scale == "sqrt_d":  # E||x - shift||^2 = sum(var) + ||mean - shift||^2
            ms = float(np.sum(stats.var) + np.sum((stats.mean - shift) ** 2))
            if ms <= 0:
                raise InputError(f"layer {stats.layer}: every stored activation is 0; cannot scale")
            s = math.sqrt(len(stats.mean) / ms)
        elif scale != "none":
            raise InputError(f"input_scale must be 'none' or 'sqrt_d', got {scale!r}")
        return cls(shift, float(s))

    @property
    def identity(self) -> bool:
        return self.scale == 1.0 and not self.shift.any()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """(B, d) -> (B, d) float32."""
        return ((x - self.shift) * np.float32(self.scale)).astype(np.float32, copy=False)

    def to_json(self) -> str:
        return json.dumps({"shift": self.shift.tolist(), "scale": self.scale}) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str) -> "InputTransform":
        try:
            d = json.loads(text)
            return cls(np.asarray(d["shift"], np.float32), float(d["scale"]))
        except (ValueError, KeyError, TypeError) as e:
            raise InputError(f"{where}: not a valid input transform ({e!r})") from None


def fold(arch: str, params: dict[str, Any], t: InputTransform) -> dict[str, np.ndarray]:
    """Parameters of one SAE trained on t(x) rewritten to take raw x (module docstring)."""
    p = {k: np.asarray(v) for k, v in params.items()}
    if t.identity:
        return p
    mu, s = t.shift.astype(np.float64), t.scale
    out = dict(p)
    if "b_pre" in p:
        out["b_pre"] = (mu + p["b_pre"] / s).astype(np.float32)
        out["b_enc"] = (p["b_enc"] / s).astype(np.float32)
    elif "b_dec" in p:
        out["b_enc"] = (p["b_enc"] / s - mu @ p["W_enc"].astype(np.float64)).astype(np.float32)
        out["b_dec"] = (mu + p["b_dec"] / s).astype(np.float32)
    else:
        raise InputError(f"cannot fold an input transform into a {arch!r} SAE")
    if "threshold" in p:  # negative = not set yet (TopK's running estimate)
        thr = p["threshold"].astype(np.float64)
        out["threshold"] = np.where(thr > 0, thr / s, thr).astype(np.float32)
    return out


def read_transform(sweep_dir: AnyPath) -> InputTransform | None:
    """The input transform a sweep was trained with, or None (raw inputs)."""
    path = SweepFiles(sweep_dir).input_transform
    return InputTransform.from_json(path.read_text(), str(path)) if path.exists() else None


def record_transform(sweep_dir: AnyPath, t: InputTransform | None, resuming: bool) -> None:
    """Write the sweep's transform at its start; on resume, refuse a different one."""
    t = None if t is None or t.identity else t
    if resuming:
        old = read_transform(sweep_dir)
        same = (old is None and t is None) or (old is not None and t is not None
                                                and old.scale == t.scale
                                                and np.array_equal(old.shift, t.shift))
        if not same:
            raise InputError(f"{sweep_dir}: this sweep was trained with another input transform "
                             f"(input_transform.json: {'none' if old is None else 'centring/scaling'}); "
                             "resume with the same input_center / input_scale and store")
    elif t is not None:
        write_atomic(SweepFiles(sweep_dir).input_transform, t.to_json())
    elif SweepFiles(sweep_dir).input_transform.exists():
        SweepFiles(sweep_dir).input_transform.unlink()
