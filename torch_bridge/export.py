"""Our SAEs to and from InterPLM's ``ae.pt`` (SAELens's folder: torch_bridge/saelens.py), and
what both formats share: the walk over an architecture's table of torch leaves.

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

``config.yaml`` beside ``ae.pt`` is the reference's own layout, carrying the training's
provenance (store, batch size, steps, lr, the architecture's hyperparameters, layer, model).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import yaml

from interplm_jax import sae as sae_arch
from interplm_jax.atomic import atomic_path, atomic_write
from interplm_jax.errors import InputError
from interplm_jax.normalize import scale_from_max
from interplm_jax.sae import Architecture, TorchLeaf
from interplm_jax.sae_dir import SavedSAE, check_non_negative, check_params, check_sizes, leaf_values

log = logging.getLogger(__name__)

#: How InterPLM's format names the sizes d and F in messages.
INTERPLM_DIMS = {"d": "d", "F": "F"}
#: (reference trainer_cfg key, our training setting: sweep_saes.TRAINING) written as provenance.
TRAINER_KEYS = (("steps", "steps"), ("warmup_steps", "warmup_steps"), ("decay_start", "decay_start"),
                ("resample_steps", "resample_steps"), ("grad_clip_norm", "grad_clip"))


# ----------------------------------------------------------------------------- both formats
def exportable(sae: SavedSAE, fmt: str) -> tuple[Architecture, dict[str, np.ndarray]]:
    """(spec, checked parameters) of an SAE that the torch format ``fmt`` (``interplm`` or
    ``saelens``) can hold (neither holds the neuron baseline; InterPLM has no Matryoshka SAE)."""
    spec = sae_arch.get(sae.arch)
    if getattr(spec, fmt) is None:
        name = {"interplm": "InterPLM", "saelens": "SAELens"}[fmt]
        other = " or SAELens's format" if fmt == "interplm" and spec.saelens else ""
        raise InputError(f"the {spec.title} is not an SAE that the {name} format has a place for "
                         f"(use its SAE directory{other})")
    return spec, check_params(sae.arch, sae.params)


def as_tensor(a: np.ndarray) -> torch.Tensor:
    """A torch tensor of ``a`` (its dtype: float32 or int32), C-contiguous."""
    return torch.from_numpy(np.array(a, order="C"))


def stored_value(leaf: TorchLeaf, value: np.ndarray, F: int) -> np.ndarray:
    """Our leaf's value as the format stores it."""
    if leaf.how == "T":
        return value.T
    if leaf.how == "reciprocal":
        return scale_from_max(value)
    if leaf.how == "broadcast":
        return np.broadcast_to(value, (F,))
    return value


def _ours(leaf: TorchLeaf, stored: np.ndarray) -> np.ndarray:
    """The inverse of :func:`stored_value` (a ``broadcast`` leaf is never read back)."""
    if leaf.how == "T":
        return stored.T
    if leaf.how == "reciprocal":
        return scale_from_max(stored)
    return stored


def read_leaves(spec: Architecture, leaves: Mapping[str, TorchLeaf], sd: Mapping[str, Any],
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
        stored = take_tensor(sd, leaf.key, shape, text if sym else "() (a scalar)", where,
                             integer=name in spec.int_leaves())
        if leaf.how == "reciprocal":  # (1 / a negative factor would read as a dead feature)
            check_non_negative(stored, leaf.key, where)
            if (stored == 0).any():
                log.info("%s: %d feature(s) with %s 0 (never fired on the normalization set): "
                         "their normalized activations are 0", where, int((stored == 0).sum()),
                         leaf.key)
        params[name] = _ours(leaf, stored)
    return params


def take_tensor(sd: Mapping[str, Any], key: str, shape: tuple, sym: str, where: str,
                integer: bool = False) -> np.ndarray:
    """The tensor ``sd[key]`` as NumPy (floats as float32), of ``shape`` (``sym`` in words) and
    with values a leaf can hold (:func:`~interplm_jax.sae_dir.leaf_values`), else InputError
    naming the key."""
    if key not in sd:
        raise InputError(f"{where}: missing key {key!r} (expected shape {shape} = {sym}); "
                         f"keys present: {sorted(sd)}")
    tensor = sd[key].detach().cpu()
    arr = (tensor.to(torch.float32) if tensor.is_floating_point() else tensor).numpy()
    if arr.shape != shape:
        raise InputError(f"{where}: key {key!r} has shape {tuple(arr.shape)}; "
                         f"expected {shape} = {sym}")
    return leaf_values(arr, key, where, integer)


# ----------------------------------------------------------------------------- InterPLM
def interplm_state_dict(sae: SavedSAE) -> dict[str, torch.Tensor]:
    """The state dict InterPLM's class for ``sae.arch`` loads (see the module docstring)."""
    spec, p = exportable(sae, "interplm")
    sd = {leaf.key: as_tensor(stored_value(leaf, p[name], sae.n_features))
          for name, leaf in spec.interplm.leaves.items() if leaf.key is not None}
    sd["normalize_to_sqrt_d"] = torch.tensor(False)
    return sd


def interplm_config(sae: SavedSAE, save_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``config.yaml`` contents InterPLM's ``load_sae`` needs to pick the class.

    Its ``TrainingRunConfig.from_yaml`` picks the trainer by a unique key (``l1_penalty``:
    ReLU, ``bandwidth``: JumpReLU, ``auxk_alpha``: BatchTopK, else ``k``: TopK): each spec's
    ``interplm.trainer_cfg`` lists the keys its class needs (TopK's leaves ``auxk_alpha`` out).
    """
    spec, p = exportable(sae, "interplm")
    d, F = sae.d_model, sae.n_features
    hp, train = sae.hparams, sae.meta.get("train") or {}
    trainer: dict[str, Any] = {"activation_dim": d, "dictionary_size": F,
                               "expansion_factor": F / d, "lr": hp.get("lr")}
    trainer.update({key: train[ours] for key, ours in TRAINER_KEYS if train.get(ours) is not None})
    for key, name, unknown in spec.interplm.trainer_cfg:
        trainer[key] = p[name].item() if name in p else hp.get(name, unknown)
    if "l1_penalty" in trainer and train.get("sparsity_warmup_steps") is not None:
        trainer["l1_penalty_warmup_steps"] = train["sparsity_warmup_steps"]
    model = sae.meta.get("model")
    loader = {"plm_embd_dir": str(sae.meta.get("store") or ""), "seed": int(hp.get("seed", 0))}
    if train.get("batch_size") is not None:
        loader["batch_size"] = int(train["batch_size"])
    # Beside the reference's keys (its loader keeps only the fields it knows): which model and
    # layer the activations came from, as its Hugging Face SAEs are named (plm_model, plm_layer).
    loader["plm_model"] = model.get("name") if isinstance(model, dict) else model
    loader["plm_layer"] = sae.meta.get("layer")
    return {
        "dataloader_cfg": loader,
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


def _reference_config(config_path: Path) -> dict[str, dict]:
    """``dataloader_cfg`` and ``trainer_cfg`` of the reference's config.yaml beside ``ae.pt``
    (empty when absent or unreadable: the state dict alone still loads)."""
    try:
        cfg = yaml.safe_load(config_path.read_text()) if config_path.is_file() else {}
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        log.warning("%s: unreadable, ignored", config_path)
        cfg = {}
    cfg = cfg if isinstance(cfg, dict) else {}
    return {key: cfg[key] if isinstance(cfg.get(key), dict) else {}
            for key in ("dataloader_cfg", "trainer_cfg")}


def _provenance(spec: Architecture, config: dict[str, dict]) -> tuple[dict, dict]:
    """(hparams, meta) from the reference's config: lr and the architecture's hyperparameters
    (l1, ...); layer, model, store and the training settings, where present."""
    trainer, loader = config["trainer_cfg"], config["dataloader_cfg"]
    hparams = {} if trainer.get("lr") is None else {"lr": trainer["lr"]}
    leaves = spec.leaf_dims()
    hparams.update({name: trainer[key] for key, name, _ in spec.interplm.trainer_cfg
                    if name not in leaves and trainer.get(key) is not None})
    train = {ours: trainer[key] for key, ours in TRAINER_KEYS if trainer.get(key) is not None}
    if loader.get("batch_size") is not None:
        train["batch_size"] = loader["batch_size"]
    meta = {"layer": loader.get("plm_layer"), "model": loader.get("plm_model"),
            "store": loader.get("plm_embd_dir") or None, "train": train or None}
    return hparams, {k: v for k, v in meta.items() if v is not None}


def _arch_from_config(trainer: dict, candidates: list[str]) -> str | None:
    """One of ``candidates`` (architectures with the same state-dict keys: TopK, BatchTopK) from
    the ``trainer_cfg`` of the reference's config.yaml, or None."""
    for name in candidates:
        if trainer.get("trainer_name") == sae_arch.get(name).interplm.trainer:
            return name
    # the reference's own rule (TrainingRunConfig.from_yaml): auxk_alpha -> BatchTopK, else k ->
    # TopK; a full BatchTopKTrainerConfig (with auxk_alpha) also has dead_feature_threshold
    if "dead_feature_threshold" in trainer or "auxk_alpha" in trainer:
        return "batchtopk" if "batchtopk" in candidates else None
    return "topk" if "k" in trainer and "topk" in candidates else None


def _interplm_arch(sd: Mapping[str, Any], trainer: dict, where: str) -> str:
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
    arch = _arch_from_config(trainer, candidates)
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
    flag = sd.get("normalize_to_sqrt_d", torch.tensor(False))
    if flag.shape != ():
        raise InputError(f"{where}: key 'normalize_to_sqrt_d' has shape {tuple(flag.shape)}; "
                         "expected () (a scalar)")
    if flag.item():
        raise InputError(f"{where}: normalize_to_sqrt_d=True SAEs (inputs rescaled to norm "
                         "sqrt(d) per token) are not supported")
    config = _reference_config(path.parent / "config.yaml")
    if arch is None:
        arch = _interplm_arch(sd, config["trainer_cfg"], where)
    spec = sae_arch.get(arch)
    if spec.interplm is None:
        raise InputError(f"{where}: the {spec.title} has no InterPLM format")
    enc = spec.interplm.leaves["W_enc"].key
    if enc not in sd:
        raise InputError(f"{where}: missing key {enc!r} of shape (F, d); keys present: {sorted(sd)}")
    if sd[enc].ndim != 2:
        raise InputError(f"{where}: key {enc!r} has shape {tuple(sd[enc].shape)}; expected 2 "
                         "dimensions (F, d)")
    check_sizes(sd[enc].shape, enc, where)
    F, d = sd[enc].shape
    params = read_leaves(spec, spec.interplm.leaves, sd, {"d": d, "F": F}, INTERPLM_DIMS, where)
    params = check_params(arch, params, where)
    hparams, meta = _provenance(spec, config)
    return SavedSAE(arch, params, hparams, {"source": str(path), "source_format": "interplm", **meta})


def load_any(path: str | os.PathLike, arch: str | None = None) -> SavedSAE:
    """An SAE from our directory (sae.json), a SAELens folder (cfg.json), or an InterPLM
    ``.pt`` file or directory (ae.pt, else ae_normalized.pt)."""
    from interplm_jax.sae_dir import META_FILE, load_sae

    from torch_bridge.saelens import SAELENS_CFG, read_saelens

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
