"""Our SAEs to and from the formats torch users load: InterPLM's ``ae.pt`` and SAELens's folder.

InterPLM (``interplm.sae.dictionary``), per architecture, as ``nn.Linear`` stores weights
(``encoder.weight`` (F, d), ``decoder.weight`` (d, F)):

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
from typing import Any

import numpy as np
import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save as save_bytes

from interplm_jax.atomic import atomic_path, atomic_write
from interplm_jax.paths import read_json
from interplm_jax.errors import InputError
from interplm_jax.sae_dir import SavedSAE, check_params

log = logging.getLogger(__name__)

SAELENS_WEIGHTS = "sae_weights.safetensors"
SAELENS_CFG = "cfg.json"
SAELENS_SCALE = "interplm_feature_scale.safetensors"
SAELENS_ARCH = {"relu": "standard", "topk": "topk", "batchtopk": "jumprelu", "jumprelu": "jumprelu"}


def rescale_factor(scale: np.ndarray) -> np.ndarray:
    """InterPLM's ``activation_rescale_factor`` = 1 / scale, 0 where scale is 0."""
    out = np.zeros_like(scale)
    np.divide(1.0, scale, out=out, where=scale != 0)
    return out


# ----------------------------------------------------------------------------- InterPLM
def _exportable(sae: SavedSAE) -> dict[str, np.ndarray]:
    """The checked parameters of an SAE that torch formats can hold (not the neuron baseline)."""
    if sae.arch == "neuron":
        raise InputError("the neuron baseline is not an SAE: InterPLM and SAELens formats have "
                         "no place for it (use its SAE directory)")
    return check_params(sae.arch, sae.params)


def interplm_state_dict(sae: SavedSAE) -> dict[str, torch.Tensor]:
    """The state dict InterPLM's class for ``sae.arch`` loads (see the module docstring)."""
    p = _exportable(sae)
    t = lambda a: torch.from_numpy(np.array(a, dtype=np.float32, order="C"))  # noqa: E731
    sd = {"encoder.weight": t(p["W_enc"].T), "encoder.bias": t(p["b_enc"]),
          "decoder.weight": t(p["W_dec"].T),
          "activation_rescale_factor": t(rescale_factor(p["scale"])),
          "normalize_to_sqrt_d": torch.tensor(False)}
    if sae.arch == "relu":
        sd["bias"] = t(p["b_pre"])
    elif sae.arch in ("topk", "batchtopk"):
        sd["b_dec"] = t(p["b_pre"])
        sd["k"] = torch.tensor(int(p["k"]), dtype=torch.int32)
        sd["threshold"] = torch.tensor(float(p["threshold"]), dtype=torch.float32)
    else:  # jumprelu
        sd["decoder.bias"] = t(p["b_dec"])
        sd["threshold"] = t(p["threshold"])
    return sd


def interplm_config(sae: SavedSAE, save_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``config.yaml`` contents InterPLM's ``load_sae`` needs to pick the class.

    Its ``TrainingRunConfig.from_yaml`` picks the trainer by a unique key (``l1_penalty``:
    ReLU, ``bandwidth``: JumpReLU, ``auxk_alpha``: BatchTopK, else ``k``: TopK), so TopK's
    section deliberately leaves ``auxk_alpha`` out.
    """
    d, F = sae.d_model, sae.n_features
    hp = sae.hparams
    trainer: dict[str, Any] = {"activation_dim": d, "dictionary_size": F,
                               "expansion_factor": F / d, "lr": hp.get("lr"),
                               "steps": hp.get("steps")}
    if sae.arch == "relu":
        trainer["l1_penalty"] = hp.get("l1")
    elif sae.arch == "topk":
        trainer["k"] = int(sae.params["k"])
        trainer["lr"] = hp.get("lr", 0.0)  # its __post_init__ would derive one otherwise
    elif sae.arch == "batchtopk":
        trainer["k"] = int(sae.params["k"])
        trainer["auxk_alpha"] = hp.get("auxk_alpha", 1 / 32)
    else:
        trainer["bandwidth"] = hp.get("bandwidth", 0.001)
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


def _arch_from_config(config_path: Path) -> str | None:
    """topk / batchtopk from the reference's config.yaml beside ``ae.pt`` (their keys are equal)."""
    if not config_path.is_file():
        return None
    try:
        text = config_path.read_text()
        trainer = (yaml.safe_load(text) or {}).get("trainer_cfg", {})
    except yaml.YAMLError:
        return None
    if not isinstance(trainer, dict):
        return None
    if "dead_feature_threshold" in trainer or trainer.get("trainer_name") == "BatchTopKTrainer":
        return "batchtopk"
    if trainer.get("trainer_name") == "TopKTrainer" or ("k" in trainer and "auxk_alpha" not in trainer):
        return "topk"
    if "auxk_alpha" in trainer:
        return "batchtopk"
    return None


def _take(sd: dict[str, torch.Tensor], key: str, shape: tuple, sym: str, where: str) -> np.ndarray:
    if key not in sd:
        raise InputError(f"{where}: missing key {key!r} (expected shape {shape} = {sym}); "
                         f"keys present: {sorted(sd)}")
    arr = sd[key].detach().to(torch.float32).cpu().numpy()
    if arr.shape != shape:
        raise InputError(f"{where}: key {key!r} has shape {tuple(arr.shape)}; "
                         f"expected {shape} = {sym}")
    return arr


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
        if "decoder.bias" in sd and "bias" not in sd:
            arch = "jumprelu"
        elif "b_dec" in sd:
            arch = _arch_from_config(path.parent / "config.yaml")
            if arch is None:
                raise InputError(f"{where}: a TopK or BatchTopK SAE (their keys are the same); "
                                 "pass arch='topk' or 'batchtopk', or keep the reference's "
                                 "config.yaml beside it")
        else:
            arch = "relu"
    if "encoder.weight" not in sd or sd["encoder.weight"].ndim != 2:
        raise InputError(f"{where}: missing key 'encoder.weight' of shape (F, d); "
                         f"keys present: {sorted(sd)}")
    F, d = sd["encoder.weight"].shape
    W_enc = _take(sd, "encoder.weight", (F, d), "(F, d)", where).T
    b_enc = _take(sd, "encoder.bias", (F,), "(F,)", where)
    W_dec = _take(sd, "decoder.weight", (d, F), "(d, F)", where).T
    factor = (_take(sd, "activation_rescale_factor", (F,), "(F,)", where)
              if "activation_rescale_factor" in sd else np.ones(F, np.float32))
    params = {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "scale": rescale_factor(factor)}
    if arch == "relu":
        params["b_pre"] = _take(sd, "bias", (d,), "(d,)", where)
    elif arch in ("topk", "batchtopk"):
        params["b_pre"] = _take(sd, "b_dec", (d,), "(d,)", where)
        params["threshold"] = _take(sd, "threshold", (), "() (a scalar)", where)
        params["k"] = _take(sd, "k", (), "() (an integer)", where).astype(np.int32)
    elif arch == "jumprelu":
        params["b_dec"] = _take(sd, "decoder.bias", (d,), "(d,)", where)
        params["threshold"] = _take(sd, "threshold", (F,), "(F,)", where)
    else:
        raise InputError(f"{where}: unknown architecture {arch!r}")
    params = check_params(arch, params, where)
    return SavedSAE(arch, params, {}, {"source": str(path), "source_format": "interplm"})


# ----------------------------------------------------------------------------- SAELens
def _fold(sae: SavedSAE) -> dict[str, np.ndarray]:
    """Weights whose raw features are our normalized ones (ReLU is positively homogeneous)."""
    if sae.arch == "topk":
        raise InputError("fold_scale is not possible for a topk SAE (rescaling features changes "
                         "which k are largest); export it unfolded")
    p = {k: v.copy() for k, v in sae.params.items()}
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
    _exportable(sae)
    p = _fold(sae) if fold_scale else sae.params
    t = lambda a: torch.from_numpy(np.array(a, dtype=np.float32, order="C"))  # noqa: E731
    weights = {"W_enc": t(p["W_enc"]), "b_enc": t(p["b_enc"]), "W_dec": t(p["W_dec"]),
               "b_dec": t(p["b_dec"] if sae.arch == "jumprelu" else p["b_pre"])}
    if sae.arch in ("jumprelu", "batchtopk"):
        weights["threshold"] = t(np.broadcast_to(p["threshold"], (sae.n_features,)))
    cfg: dict[str, Any] = {
        "architecture": SAELENS_ARCH[sae.arch], "d_in": sae.d_model, "d_sae": sae.n_features,
        "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": sae.arch != "jumprelu",
        "normalize_activations": "none", "reshape_activations": "none",
        "meta": {"model_name": sae.meta.get("model"),
                 "hook_name": (f"esm.encoder.layer.{int(sae.meta['layer']) - 1}"
                               if sae.meta.get("layer") else None),
                 "hook_layer": sae.meta.get("layer"), "model_class_name": "EsmForMaskedLM",
                 "prepend_bos": True},
    }
    if sae.arch == "topk":
        cfg["k"] = int(sae.params["k"])
        cfg["rescale_acts_by_decoder_norm"] = False
    atomic_write(out_dir / SAELENS_WEIGHTS, save_bytes(weights))
    scale_file = out_dir / SAELENS_SCALE
    if not fold_scale and not np.all(sae.params["scale"] == 1):
        atomic_write(scale_file, save_bytes({"scale": t(sae.params["scale"])}))
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
    arch = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu"}.get(kind)
    if arch is None:
        raise InputError(f"{cfg_path}: architecture {kind!r} is not supported "
                         "(standard, topk, jumprelu)")
    where = str(w_path)
    d, F = int(cfg["d_in"]), int(cfg["d_sae"])
    params = {"W_enc": _take(sd, "W_enc", (d, F), "(d_in, d_sae)", where),
              "b_enc": _take(sd, "b_enc", (F,), "(d_sae,)", where),
              "W_dec": _take(sd, "W_dec", (F, d), "(d_sae, d_in)", where)}
    b_dec = _take(sd, "b_dec", (d,), "(d_in,)", where)
    subtracts = bool(cfg.get("apply_b_dec_to_input", True))
    # rewrite b_enc so that the same function has our convention (relu/topk subtract b_pre from
    # x, jumprelu does not): (x - b) W + c = x W + (c - b W)
    if arch == "jumprelu":
        params["b_dec"] = b_dec
        if subtracts:
            params["b_enc"] = params["b_enc"] - b_dec @ params["W_enc"]
        params["threshold"] = _take(sd, "threshold", (F,), "(d_sae,)", where)
    else:
        params["b_pre"] = b_dec
        if not subtracts:
            params["b_enc"] = params["b_enc"] + b_dec @ params["W_enc"]
    if arch == "topk":
        k = cfg.get("k", (cfg.get("activation_fn_kwargs") or {}).get("k"))
        if k is None:
            raise InputError(f"{cfg_path}: a topk SAE without k")
        params["k"] = np.array(int(k), np.int32)
        params["threshold"] = np.array(-1.0, np.float32)
    scale = np.ones(F, np.float32)
    if (folder / SAELENS_SCALE).is_file():
        scale = _take(load_file(str(folder / SAELENS_SCALE)), "scale", (F,), "(d_sae,)",
                      str(folder / SAELENS_SCALE))
    params["scale"] = scale
    meta = cfg.get("meta") or {}
    out_meta = {"source": str(folder), "source_format": "saelens",
                "model": meta.get("model_name", cfg.get("model_name")),
                "layer": meta.get("hook_layer", cfg.get("hook_layer"))}
    return SavedSAE(arch, check_params(arch, params, where), {}, out_meta)


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
