"""Our SAEs to and from the formats torch users load: InterPLM's ``ae.pt`` and SAELens's folder.

Where each leaf goes is the architecture's spec (``interplm_jax.sae.<arch>.SPEC``: its
``interplm`` and ``saelens`` tables of :class:`~interplm_jax.sae.TorchLeaf`); this module has one
code path per format that follows those tables. For the four SAEs:

InterPLM (``interplm.sae.dictionary``), as ``nn.Linear`` stores weights (``encoder.weight``
(F, d), ``decoder.weight`` (d, F)):

    relu       bias (d) = b_pre, encoder.weight = W_enc.T, encoder.bias = b_enc,
               decoder.weight = W_dec.T
    topk /     the same with b_dec (d) = b_pre, plus k (int) and threshold (scalar; BatchTopK's
    batchtopk  inference threshold, -1 for TopK as the reference initialises it)
    jumprelu   decoder.bias (d) = b_dec, threshold (F) (neither side subtracts b_dec from x)
    all        activation_rescale_factor (F) = 1 / scale (0 where scale is 0),
               normalize_to_sqrt_d = False

SAELens (``sae_weights.safetensors`` + ``cfg.json``): W_enc (d, F), b_enc, W_dec (F, d),
b_dec = b_pre (``apply_b_dec_to_input`` true; jumprelu: b_dec = b_dec, false), threshold
(jumprelu); architecture "standard" (relu), "topk", "jumprelu" (jumprelu, and batchtopk with its
scalar threshold broadcast: the same function).
SAELens has no per-feature scale: by default weights are written raw and the scale goes to
``interplm_feature_scale.safetensors`` beside them (read back on import); ``fold_scale=True``
folds it into the weights instead (features then come out normalized in SAELens).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save as save_bytes

from interplm_jax import sae as sae_arch
from interplm_jax.atomic import atomic_path, atomic_write
from interplm_jax.errors import InputError
from interplm_jax.normalize import scale_from_max
from interplm_jax.paths import read_json
from interplm_jax.sae import Architecture, TorchLeaf
from interplm_jax.sae_dir import SavedSAE, check_params

log = logging.getLogger(__name__)

SAELENS_WEIGHTS = "sae_weights.safetensors"
SAELENS_CFG = "cfg.json"
SAELENS_SCALE = "interplm_feature_scale.safetensors"
#: How each format names the sizes d and F in messages.
INTERPLM_DIMS = {"d": "d", "F": "F"}
SAELENS_DIMS = {"d": "d_in", "F": "d_sae"}


# ----------------------------------------------------------------------------- both formats
def _exportable(sae: SavedSAE) -> tuple[Architecture, dict[str, np.ndarray]]:
    """(spec, checked parameters) of an SAE that torch formats can hold (not the neuron baseline)."""
    spec = sae_arch.get(sae.arch)
    if spec.interplm is None or spec.saelens is None:
        raise InputError(f"the {spec.title} is not an SAE that the InterPLM and SAELens formats "
                         "have a place for (use its SAE directory)")
    return spec, check_params(sae.arch, sae.params)


def _tensor(a: np.ndarray) -> torch.Tensor:
    """A torch tensor of ``a`` (its dtype: float32 or int32), C-contiguous."""
    return torch.from_numpy(np.array(a, order="C"))


def _stored(leaf: TorchLeaf, value: np.ndarray, F: int) -> np.ndarray:
    """Our leaf's value as the format stores it."""
    if leaf.how == "T":
        return value.T
    if leaf.how == "reciprocal":
        return scale_from_max(value)
    if leaf.how == "broadcast":
        return np.broadcast_to(value, (F,))
    return value


def _ours(leaf: TorchLeaf, stored: np.ndarray) -> np.ndarray:
    """The inverse of :func:`_stored` (a ``broadcast`` leaf is never read back)."""
    if leaf.how == "T":
        return stored.T
    if leaf.how == "reciprocal":
        return scale_from_max(stored)
    return stored


def _read_leaves(spec: Architecture, leaves: Mapping[str, TorchLeaf], sd: Mapping[str, Any],
                 dims: dict[str, int], names: dict[str, str], where: str) -> dict[str, np.ndarray]:
    """Our leaves from the tensors ``sd`` of a file, following a format's table ``leaves``."""
    params = {}
    for name, leaf in leaves.items():
        sym = spec.leaf_dims()[name]
        if leaf.how == "T":
            sym = sym[::-1]
        shape = tuple(dims[s] for s in sym)
        if leaf.key is None or (leaf.key not in sd and leaf.default is not None):
            params[name] = np.full(shape, leaf.default, np.float32)
            continue
        text = "(" + ", ".join(names[s] for s in sym) + ("," if len(sym) == 1 else "") + ")"
        params[name] = _ours(leaf, _take(sd, leaf.key, shape, text if sym else "() (a scalar)", where))
    return params


def _take(sd: Mapping[str, Any], key: str, shape: tuple, sym: str, where: str) -> np.ndarray:
    if key not in sd:
        raise InputError(f"{where}: missing key {key!r} (expected shape {shape} = {sym}); "
                         f"keys present: {sorted(sd)}")
    arr = sd[key].detach().to(torch.float32).cpu().numpy()
    if arr.shape != shape:
        raise InputError(f"{where}: key {key!r} has shape {tuple(arr.shape)}; "
                         f"expected {shape} = {sym}")
    return arr


# ----------------------------------------------------------------------------- InterPLM
def interplm_state_dict(sae: SavedSAE) -> dict[str, torch.Tensor]:
    """The state dict InterPLM's class for ``sae.arch`` loads (see the module docstring)."""
    spec, p = _exportable(sae)
    sd = {leaf.key: _tensor(_stored(leaf, p[name], sae.n_features))
          for name, leaf in spec.interplm.leaves.items() if leaf.key is not None}
    sd["normalize_to_sqrt_d"] = torch.tensor(False)
    return sd


def interplm_config(sae: SavedSAE, save_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``config.yaml`` contents InterPLM's ``load_sae`` needs to pick the class.

    Its ``TrainingRunConfig.from_yaml`` picks the trainer by a unique key (``l1_penalty``:
    ReLU, ``bandwidth``: JumpReLU, ``auxk_alpha``: BatchTopK, else ``k``: TopK): each spec's
    ``interplm.trainer_cfg`` lists the keys its class needs (TopK's leaves ``auxk_alpha`` out).
    """
    spec, p = _exportable(sae)
    d, F = sae.d_model, sae.n_features
    hp = sae.hparams
    trainer: dict[str, Any] = {"activation_dim": d, "dictionary_size": F,
                               "expansion_factor": F / d, "lr": hp.get("lr"),
                               "steps": hp.get("steps")}
    for key, name, unknown in spec.interplm.trainer_cfg:
        trainer[key] = p[name].item() if name in p else hp.get(name, unknown)
    return {
        "dataloader_cfg": {"plm_embd_dir": str(sae.meta.get("store", "")),
                           "batch_size": int(hp.get("batch_size", 2048)),
                           "seed": int(hp.get("seed", 0))},
        "trainer_cfg": trainer,
        "eval_cfg": {},
        "wandb_cfg": {"use_wandb": False},
        "checkpoint_cfg": {"save_dir": str(save_dir)},
    }


def write_interplm(sae: SavedSAE, out_dir: str | os.PathLike, name: str = "ae.pt") -> Path:
    """Write ``<out_dir>/<name>`` (state dict) and ``<out_dir>/config.yaml``, each atomically."""
    out_dir = Path(out_dir)
    sd = interplm_state_dict(sae)
    with atomic_path(out_dir / name) as tmp:
        torch.save(sd, tmp)
    atomic_write(out_dir / "config.yaml",
                 yaml.safe_dump(interplm_config(sae, out_dir), sort_keys=False))
    return out_dir / name


def safe_torch_load(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """``torch.load(weights_only=True)`` that accepts only a flat dict of tensors.

    Raises:
      InputError for a missing file, a pickle that needs anything but tensors and plain
      containers (refused by torch), or a payload that is not a ``{str: Tensor}`` dict.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError/RuntimeError for refused pickles
        raise InputError(f"{path}: refused: not a plain state dict of tensors "
                         f"(torch.load(weights_only=True) says: {str(e).splitlines()[0]})") from None
    if not isinstance(obj, dict):
        raise InputError(f"{path}: holds a {type(obj).__name__}, expected a state dict")
    bad = [k for k, v in obj.items() if not (isinstance(k, str) and torch.is_tensor(v))]
    if bad:
        raise InputError(f"{path}: entries {bad[:5]} are not tensors; expected a state dict")
    return obj


def _arch_from_config(config_path: Path, candidates: list[str]) -> str | None:
    """One of ``candidates`` (architectures with the same state-dict keys: TopK, BatchTopK) from
    the reference's config.yaml beside ``ae.pt``, or None."""
    if not config_path.is_file():
        return None
    try:
        trainer = (yaml.safe_load(config_path.read_text()) or {}).get("trainer_cfg", {})
    except yaml.YAMLError:
        return None
    if not isinstance(trainer, dict):
        return None
    for name in candidates:
        if trainer.get("trainer_name") == sae_arch.get(name).interplm.trainer:
            return name
    # the reference's own rule (TrainingRunConfig.from_yaml): auxk_alpha -> BatchTopK, else k ->
    # TopK; a full BatchTopKTrainerConfig (with auxk_alpha) also has dead_feature_threshold
    if "dead_feature_threshold" in trainer or "auxk_alpha" in trainer:
        return "batchtopk" if "batchtopk" in candidates else None
    return "topk" if "k" in trainer and "topk" in candidates else None


def _interplm_arch(sd: Mapping[str, Any], config_path: Path, where: str) -> str:
    """The architecture whose InterPLM keys ``sd`` holds (TopK vs BatchTopK from config.yaml)."""
    required = {name: {leaf.key for leaf in sae_arch.get(name).interplm.leaves.values()
                       if leaf.key is not None and leaf.default is None}
                for name in sae_arch.EXPORTABLE_ARCHS}
    present = [name for name, keys in required.items() if keys <= set(sd)]
    if not present:  # the closest one, so that reading it names the missing keys
        return min(required, key=lambda name: len(required[name] - set(sd)))
    most = max(len(required[name]) for name in present)
    candidates = [name for name in present if len(required[name]) == most]
    if len(candidates) == 1:
        return candidates[0]
    arch = _arch_from_config(config_path, candidates)
    if arch is None:
        titles = " or ".join(sae_arch.get(name).title.replace(" SAE", "") for name in candidates)
        raise InputError(f"{where}: a {titles} SAE (their keys are the same); pass arch= one of "
                         f"{candidates}, or keep the reference's config.yaml beside it")
    return arch


def read_interplm(path: str | os.PathLike, arch: str | None = None) -> SavedSAE:
    """Import an InterPLM ``ae.pt`` / ``ae_normalized.pt`` (ReLU, TopK, BatchTopK, JumpReLU).

    Args:
      path: the ``.pt`` file (or its directory, reading ``ae.pt``).
      arch: force the architecture; by default it is read from the keys, and for TopK vs
        BatchTopK (identical keys) from the reference's ``config.yaml`` beside the file.
    Raises:
      InputError naming the key and the shape expected when a key is missing or misshapen.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "ae.pt"
    sd = safe_torch_load(path)
    where = str(path)
    if bool(sd.get("normalize_to_sqrt_d", torch.tensor(False)).item()):
        raise InputError(f"{where}: normalize_to_sqrt_d=True SAEs (inputs rescaled to norm "
                         "sqrt(d) per token) are not supported")
    if arch is None:
        arch = _interplm_arch(sd, path.parent / "config.yaml", where)
    spec = sae_arch.get(arch)
    if spec.interplm is None:
        raise InputError(f"{where}: the {spec.title} has no InterPLM format")
    enc = spec.interplm.leaves["W_enc"].key
    if enc not in sd or sd[enc].ndim != 2:
        raise InputError(f"{where}: missing key {enc!r} of shape (F, d); keys present: {sorted(sd)}")
    F, d = sd[enc].shape
    params = _read_leaves(spec, spec.interplm.leaves, sd, {"d": d, "F": F}, INTERPLM_DIMS, where)
    params = check_params(arch, params, where)
    return SavedSAE(arch, params, {}, {"source": str(path), "source_format": "interplm"})


# ----------------------------------------------------------------------------- SAELens
def _fold(spec: Architecture, p: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Weights whose raw features are our normalized ones (ReLU is positively homogeneous)."""
    if not spec.saelens.foldable:
        raise InputError(f"fold_scale is not possible for a {spec.name} SAE (rescaling its "
                         "features changes which of them are kept); export it unfolded")
    p = {k: v.copy() for k, v in p.items()}
    s = p["scale"]
    live = s > 0
    p["W_enc"] = np.where(live, p["W_enc"] * s, 0.0).astype(np.float32)
    p["b_enc"] = np.where(live, p["b_enc"] * s, 0.0).astype(np.float32)
    p["W_dec"] = np.where(live[:, None], p["W_dec"] / np.where(live, s, 1.0)[:, None], p["W_dec"])
    if "threshold" in p:  # batchtopk's scalar becomes per-feature, as SAELens's jumprelu
        thr = np.broadcast_to(p["threshold"], s.shape)
        p["threshold"] = np.where(live, thr * s, 0.0).astype(np.float32)
    p["scale"] = np.ones_like(s)
    return p


def write_saelens(sae: SavedSAE, out_dir: str | os.PathLike, fold_scale: bool = False) -> Path:
    """Write ``sae_weights.safetensors`` + ``cfg.json`` (+ the scale file) into ``out_dir``."""
    out_dir = Path(out_dir)
    spec, p = _exportable(sae)
    fmt = spec.saelens
    if fold_scale:
        p = _fold(spec, p)
    cfg: dict[str, Any] = {
        "architecture": fmt.architecture, "d_in": sae.d_model, "d_sae": sae.n_features,
        "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": spec.out_bias == "b_pre",
        "normalize_activations": "none", "reshape_activations": "none",
        "meta": {"model_name": sae.meta.get("model"),
                 "hook_name": (f"esm.encoder.layer.{int(sae.meta['layer']) - 1}"
                               if sae.meta.get("layer") else None),
                 "hook_layer": sae.meta.get("layer"), "model_class_name": "EsmForMaskedLM",
                 "prepend_bos": True},
    }
    weights = {}
    for name, leaf in fmt.leaves.items():
        if leaf.how == "cfg":
            cfg[leaf.key] = p[name].item()
        elif leaf.key is not None:
            weights[leaf.key] = _tensor(_stored(leaf, p[name], sae.n_features).astype(np.float32))
    if fmt.architecture == "topk":
        cfg["rescale_acts_by_decoder_norm"] = False
    atomic_write(out_dir / SAELENS_WEIGHTS, save_bytes(weights))
    scale_file = out_dir / SAELENS_SCALE
    if not fold_scale and not np.all(sae.params["scale"] == 1):
        atomic_write(scale_file, save_bytes({"scale": _tensor(p["scale"])}))
    elif scale_file.exists():
        scale_file.unlink()
    atomic_write(out_dir / SAELENS_CFG, json.dumps(cfg, indent=2) + "\n")
    return out_dir


def read_saelens(folder: str | os.PathLike) -> SavedSAE:
    """Import a SAELens folder (standard, topk or jumprelu; legacy cfgs without architecture).

    Raises:
      InputError for an unsupported architecture or input normalization, or a missing or
      misshapen tensor (naming the key and the shape expected).
    """
    folder = Path(folder)
    cfg_path, w_path = folder / SAELENS_CFG, folder / SAELENS_WEIGHTS
    cfg = read_json(cfg_path, f"{cfg_path}: missing (not a SAELens folder)")
    try:
        sd = load_file(str(w_path))
    except FileNotFoundError:
        raise InputError(f"{w_path}: missing") from None
    except (SafetensorError, OSError) as e:
        raise InputError(f"{w_path}: unreadable: {e}") from None
    kind = cfg.get("architecture")
    if kind is None:  # legacy SAELens configs
        kind = "topk" if cfg.get("activation_fn_str") == "topk" else "standard"
    if cfg.get("normalize_activations", "none") not in ("none", None):
        raise InputError(f"{cfg_path}: normalize_activations={cfg['normalize_activations']!r} "
                         "is not supported (fold it into the weights first)")
    if cfg.get("rescale_acts_by_decoder_norm"):
        raise InputError(f"{cfg_path}: rescale_acts_by_decoder_norm=true is not supported")
    readable = {a.saelens.architecture: a for a in sae_arch.ARCHITECTURES.values()
                if a.saelens is not None and a.saelens.reads_back}
    if kind not in readable:
        raise InputError(f"{cfg_path}: architecture {kind!r} is not supported "
                         f"({', '.join(readable)})")
    spec, where = readable[kind], str(w_path)
    d, F = int(cfg["d_in"]), int(cfg["d_sae"])
    leaves = {name: leaf for name, leaf in spec.saelens.leaves.items() if leaf.how != "cfg"}
    params = _read_leaves(spec, leaves, sd, {"d": d, "F": F}, SAELENS_DIMS, where)
    for name, leaf in spec.saelens.leaves.items():
        if leaf.how == "cfg":  # SAELens 6 keeps k in cfg.json; older ones in activation_fn_kwargs
            value = cfg.get(leaf.key, (cfg.get("activation_fn_kwargs") or {}).get(leaf.key))
            if value is None:
                raise InputError(f"{cfg_path}: a {kind} SAE without {leaf.key}")
            params[name] = np.array(int(value), np.int32)
    # b_dec is subtracted from x (SAELens apply_b_dec_to_input) or not, and ours is (b_pre) or
    # not (b_dec): rewrite b_enc so that the function is the same, (x - b) W + c = x W + (c - b W)
    subtracts = bool(cfg.get("apply_b_dec_to_input", True))
    if subtracts != (spec.out_bias == "b_pre"):
        shift = params[spec.out_bias] @ params["W_enc"]
        params["b_enc"] = params["b_enc"] + (shift if not subtracts else -shift)
    scale = np.ones(F, np.float32)
    if (folder / SAELENS_SCALE).is_file():
        scale = _take(load_file(str(folder / SAELENS_SCALE)), "scale", (F,), "(d_sae,)",
                      str(folder / SAELENS_SCALE))
    params["scale"] = scale
    meta = cfg.get("meta") or {}
    out_meta = {"source": str(folder), "source_format": "saelens",
                "model": meta.get("model_name", cfg.get("model_name")),
                "layer": meta.get("hook_layer", cfg.get("hook_layer"))}
    return SavedSAE(spec.name, check_params(spec.name, params, where), {}, out_meta)


def load_any(path: str | os.PathLike, arch: str | None = None) -> SavedSAE:
    """An SAE from our directory (sae.json), a SAELens folder (cfg.json), or an InterPLM
    ``.pt`` file or directory (ae.pt, else ae_normalized.pt)."""
    from interplm_jax.sae_dir import META_FILE, load_sae

    path = Path(path)
    if path.is_file():
        return read_interplm(path, arch)
    if (path / META_FILE).is_file():
        return load_sae(path)
    if (path / SAELENS_CFG).is_file():
        return read_saelens(path)
    for name in ("ae.pt", "ae_normalized.pt"):
        if (path / name).is_file():
            return read_interplm(path / name, arch)
    raise InputError(f"{path}: no SAE found (expected sae.json, cfg.json, ae.pt or a .pt file)")
