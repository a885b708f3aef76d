"""One SAE on disk, in our own format: the directory that exports, normalization and steering share.

Layout of an SAE directory::

    sae.json              {"format": "interplm-jax-sae", "version": 1, "arch": "relu",
                           "d_model": d, "n_features": F, "hparams": {...}, "meta": {...}}
    params.safetensors    the parameter pytree, one float32 tensor per leaf
                          (b_pre (d,), W_enc (d, F), b_enc (F,), W_dec (F, d), scale (F,), ...)
    feature_stats/        written by normalization (max.npy, summary.json; min.npy for neurons)

The same directory may also hold torch exports (``ae.pt`` + ``config.yaml``,
``sae_weights.safetensors`` + ``cfg.json``); they never collide with these names.
NumPy only (safetensors' NumPy API), so ``interplm_jax`` stays free of torch. The directory may
be local or a ``gs://`` URL (:mod:`interplm_jax.paths`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as load_bytes, save as save_bytes

from interplm_jax.errors import InputError
from interplm_jax.paths import JSON_NAMES, AnyPath, as_path, mkdir, read_json, write_atomic
from interplm_jax.sae import ARCHITECTURES

FORMAT = "interplm-jax-sae"
VERSION = 1
META_FILE = "sae.json"
PARAMS_FILE = "params.safetensors"

#: Leaves per architecture and their shapes in terms of d (model width) and F (features), from
#: each architecture's spec (``interplm_jax.sae``); ``k`` (TopK, BatchTopK) is int32.
SHAPES = {name: arch.leaf_dims() for name, arch in ARCHITECTURES.items()}
INT_LEAVES = tuple(sorted({leaf for arch in ARCHITECTURES.values() for leaf in arch.int_leaves()}))
ARCHS = tuple(SHAPES)


@dataclasses.dataclass(frozen=True)
class SavedSAE:
    """One SAE: its architecture, parameters (NumPy, float32) and hyperparameters.

    Attributes:
      arch: an architecture of ``interplm_jax.sae`` ("relu", "topk", "batchtopk", "jumprelu",
        "neuron").
      params: leaf name -> array (shapes in :data:`SHAPES`; ``k`` int32, the rest float32).
      hparams: training hyperparameters when known (lr, l1, seed, ...).
      meta: provenance: model, layer, sweep and SAE id, normalization set, baseline kind.
    """

    arch: str
    params: dict[str, np.ndarray]
    hparams: dict[str, Any] = dataclasses.field(default_factory=dict)
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def d_model(self) -> int:
        return int(self.params["W_enc"].shape[0])

    @property
    def n_features(self) -> int:
        return int(self.params["W_enc"].shape[1])

    def replace(self, **changes) -> "SavedSAE":
        return dataclasses.replace(self, **changes)


def check_params(arch: str, params: dict[str, Any], where: str = "params") -> dict[str, np.ndarray]:
    """Validate leaf names, shapes and values for ``arch``; return float32 (``k``: int32) NumPy
    copies.

    Raises:
      InputError naming the missing/unexpected key, or the key with the wrong shape (and the
      shape expected) or values (see :func:`leaf_values`; ``scale`` must be >= 0).
    """
    if not isinstance(arch, str) or arch not in SHAPES:
        raise InputError(f"{where}: unknown architecture {arch!r}; expected one of {list(ARCHS)}")
    expected = SHAPES[arch]
    missing = sorted(set(expected) - set(params))
    if missing:
        raise InputError(f"{where}: missing key(s) {missing} for a {arch} SAE")
    extra = sorted(set(params) - set(expected))
    if extra:
        raise InputError(f"{where}: unexpected key(s) {extra} for a {arch} SAE "
                         f"(expected {sorted(expected)})")
    W_enc = np.asarray(params["W_enc"])
    if W_enc.ndim != 2:
        raise InputError(f"{where}: key 'W_enc' has shape {W_enc.shape}; expected (d, F)")
    check_sizes(W_enc.shape, "W_enc", where)
    dims = {"d": W_enc.shape[0], "F": W_enc.shape[1]}
    out = {}
    for key, sym in expected.items():
        arr = np.asarray(params[key])
        want = tuple(dims[s] for s in sym)
        if arr.shape != want:
            names = "(" + ", ".join(sym) + ")" if sym else "() (a scalar)"
            raise InputError(f"{where}: key {key!r} has shape {arr.shape}; expected {want} = {names}")
        arr = leaf_values(arr, key, where, integer=key in INT_LEAVES)
        out[key] = np.array(arr, dtype=np.int32 if key in INT_LEAVES else np.float32, copy=True)
    if "k" in out and not 1 <= int(params["k"]) <= dims["F"]:  # (before any int32 wrap-around)
        raise InputError(f"{where}: key 'k' is {int(params['k'])}; expected 1 <= k <= F = {dims['F']}")
    check_non_negative(out["scale"], "scale", where)
    return out


def check_sizes(shape: tuple[int, ...], key: str, where: str) -> None:
    """InputError unless the weight ``key`` of ``shape`` ((d, F) or (F, d)) has d, F >= 1."""
    if 0 in shape:
        raise InputError(f"{where}: key {key!r} has shape {tuple(shape)}: an SAE needs d >= 1 "
                         "and F >= 1")


def leaf_values(arr: np.ndarray, key: str, where: str, integer: bool = False) -> np.ndarray:
    """``arr`` when its values can be a leaf's: floating point and finite; with ``integer``,
    integers (or floats that are whole numbers).

    Raises:
      InputError naming ``key`` and the dtype found (int, bool or complex for a float leaf).
    """
    floating = np.issubdtype(arr.dtype, np.floating) or arr.dtype.name == "bfloat16"
    if integer:
        if not (np.issubdtype(arr.dtype, np.integer)
                or (floating and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)))):
            raise InputError(f"{where}: key {key!r} holds {arr.dtype} values {arr.ravel()[:3]}; "
                             "expected integers")
        return arr
    if not floating:
        raise InputError(f"{where}: key {key!r} holds {arr.dtype} values; expected floating point")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{where}: key {key!r} holds inf or NaN")
    return arr


def check_non_negative(arr: np.ndarray, key: str, where: str) -> None:
    """InputError naming the first feature where ``arr`` (F,) (a scale, or InterPLM's
    ``activation_rescale_factor``) is negative: 0 is a feature that never fired, < 0 has no
    meaning."""
    negative = np.flatnonzero(arr < 0)
    if negative.size:
        i = int(negative[0])
        raise InputError(f"{where}: key {key!r} is {float(arr[i])} for feature {i}; expected >= 0 "
                         f"({negative.size} negative value(s); 0 marks a feature that never fired)")


def save_sae(path: str | os.PathLike, sae: SavedSAE) -> AnyPath:
    """Write ``sae`` to the directory ``path`` (created); each file is written atomically.

    The parameters are written before ``sae.json``, so a directory with ``sae.json`` is complete.
    """
    path = as_path(path)
    params = check_params(sae.arch, sae.params, str(path))
    mkdir(path)
    write_atomic(path / PARAMS_FILE, save_bytes({k: np.ascontiguousarray(v) for k, v in params.items()}))
    meta = {"format": FORMAT, "version": VERSION, "arch": sae.arch,
            "d_model": sae.d_model, "n_features": sae.n_features,
            "hparams": _plain(sae.hparams), "meta": _plain(sae.meta)}
    write_atomic(path / META_FILE, json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return path


def load_sae(path: str | os.PathLike) -> SavedSAE:
    """Read an SAE directory written by :func:`save_sae`.

    Raises:
      InputError if ``sae.json`` or ``params.safetensors`` is missing, of another format, or
      its parameters do not match the declared architecture and sizes.
    """
    path = as_path(path)
    meta_file = path / META_FILE
    meta = read_json(meta_file, f"{path}: not an SAE directory (no {META_FILE}); export one with "
                     "scripts/export.py or import a torch SAE with torch_bridge.export", dict)
    if meta.get("format") != FORMAT:
        raise InputError(f"{meta_file}: format is {meta.get('format')!r}, expected {FORMAT!r}")
    if meta.get("version") != VERSION:
        raise InputError(f"{meta_file}: version {meta.get('version')!r} is not supported "
                         f"(this code reads version {VERSION})")
    for key in ("hparams", "meta"):
        if not isinstance(meta.get(key, {}), dict):
            raise InputError(f"{meta_file}: key {key!r} holds {JSON_NAMES.get(type(meta[key]))}; "
                             "expected a JSON object")
    try:
        params = load_bytes((path / PARAMS_FILE).read_bytes())
    except FileNotFoundError:
        raise InputError(f"{path / PARAMS_FILE}: missing") from None
    except (SafetensorError, OSError) as e:
        raise InputError(f"{path / PARAMS_FILE}: unreadable: {e}") from None
    for key, sym in SHAPES.get(meta.get("arch"), {}).items():
        if sym == () and key in params and params[key].size == 1:  # safetensors keeps 0-d as (1,)
            params[key] = params[key].reshape(())
    params = check_params(meta.get("arch"), params, str(path / PARAMS_FILE))
    sae = SavedSAE(meta["arch"], params, meta.get("hparams", {}), meta.get("meta", {}))
    if (sae.d_model, sae.n_features) != (meta.get("d_model"), meta.get("n_features")):
        raise InputError(f"{meta_file}: declares d_model={meta.get('d_model')}, "
                         f"n_features={meta.get('n_features')} but the parameters have "
                         f"d={sae.d_model}, F={sae.n_features}")
    return sae


def _plain(obj: Any) -> Any:
    """JSON-able copy: NumPy scalars/arrays to Python numbers/lists, Paths to strings."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (Path, os.PathLike)):
        return os.fspath(obj)
    return obj
