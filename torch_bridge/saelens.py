"""Our SAEs to and from SAELens 6 folders: ``sae_weights.safetensors`` + ``cfg.json``, as
``SAE.save_model`` writes them and ``SAE.load_from_disk`` reads them.

Weights (the ``saelens`` table of each architecture's spec): W_enc (d, F), b_enc, W_dec (F, d),
b_dec = b_pre (``apply_b_dec_to_input`` true; jumprelu: b_dec = b_dec, false), threshold
(jumprelu); architecture "standard" (relu), "topk" (``k`` in cfg.json), "jumprelu" (jumprelu, and
batchtopk with its scalar threshold broadcast: the same function).

``cfg.json["metadata"]`` holds what SAELens's own ``save_model`` writes (``sae_lens_version``,
``model_name`` as a string, ``hook_name``, ``hook_layer``, ``model_class_name``, ...): the hook is
the module whose output is ``hidden_states[L]`` (``torch_bridge.models.hook_name``:
``esm.encoder.layer.{L-1}``, and for the last layer the final norm,
``esm.encoder.emb_layer_norm_after``), ``hook_layer`` is L. Our provenance (the full model
record, sweep, SAE id, step, hyperparameters, and how the scale was written) is under
``metadata["interplm_jax"]``.

SAELens has no per-feature scale. A normalized SAE is exported with the scale folded into the
weights by default (SAELens then gives the normalized features the study reports); TopK cannot be
folded (rescaling features changes which k are kept), and ``fold_scale=False`` keeps the weights
raw: the scale then goes to ``interplm_feature_scale.safetensors`` beside them, read back on
import. ``metadata["interplm_jax"]["scale"]`` says which: ``folded``, ``raw`` or ``none``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.torch import load_file, save as save_bytes

from interplm_jax import __version__
from interplm_jax import sae as sae_arch
from interplm_jax.atomic import atomic_write
from interplm_jax.errors import InputError
from interplm_jax.paths import JSON_NAMES, read_json
from interplm_jax.sae_dir import SavedSAE, check_non_negative, check_params
from torch_bridge.export import as_tensor, exportable, read_leaves, stored_value, take_tensor

log = logging.getLogger(__name__)

SAELENS_WEIGHTS = "sae_weights.safetensors"
SAELENS_CFG = "cfg.json"
SAELENS_SCALE = "interplm_feature_scale.safetensors"
#: The SAELens release whose ``save_model`` layout we write (tests load it with that release).
SAELENS_LAYOUT_VERSION = "6.54.12"
SAELENS_DIMS = {"d": "d_in", "F": "d_sae"}


def _fold(p: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Weights whose raw features are our normalized ones (ReLU is positively homogeneous)."""
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


def _hook(sae: SavedSAE) -> tuple[str | None, str]:
    """(hook_name, model_class_name) of the SAE's layer, from the model record of its store."""
    from torch_bridge.models import family_named, hook_name_of

    model, layer = sae.meta.get("model"), sae.meta.get("layer")
    if isinstance(model, dict) and "n_layers" in model and layer is not None:
        family = family_named(model.get("model_family", "esm2"))
        return hook_name_of(model, int(layer)), family.masked_lm_class
    if sae.meta.get("hook_name"):  # imported from SAELens: kept as it came
        return sae.meta["hook_name"], sae.meta.get("model_class_name") or "EsmForMaskedLM"
    if layer is not None:
        log.warning("hook_name not written: the SAE's model record does not give the number of "
                    "layers, so whether layer %s is the last (hooked after the final norm) is "
                    "unknown", layer)
    return None, "EsmForMaskedLM"


def saelens_metadata(sae: SavedSAE, scale: str) -> dict[str, Any]:
    """``cfg.json["metadata"]``: SAELens's keys, then ours under ``interplm_jax``."""
    model, layer = sae.meta.get("model"), sae.meta.get("layer")
    name = model.get("name") if isinstance(model, dict) else model
    hook, model_class = _hook(sae)
    ours = {k: sae.meta[k] for k in ("model", "sweep", "id", "step", "store", "normalized_on")
            if sae.meta.get(k) is not None}
    return {"sae_lens_version": SAELENS_LAYOUT_VERSION,
            "sae_lens_training_version": SAELENS_LAYOUT_VERSION,
            "model_name": None if name is None else str(name), "hook_name": hook,
            "hook_layer": None if layer is None else int(layer), "hook_head_index": None,
            "model_class_name": model_class, "model_from_pretrained_kwargs": {},
            "prepend_bos": True, "exclude_special_tokens": True,
            "dataset_path": None if sae.meta.get("store") is None else str(sae.meta["store"]),
            "interplm_jax": {"version": __version__, "arch": sae.arch, "scale": scale,
                             "hparams": sae.hparams, **ours}}


def write_saelens(sae: SavedSAE, out_dir: str | os.PathLike, fold_scale: bool | None = None) -> Path:
    """Write ``sae_weights.safetensors`` + ``cfg.json`` (+ the scale file when raw) into ``out_dir``.

    Args:
      fold_scale: None (default): fold a normalized SAE's scale into the weights where the
        architecture allows (not TopK: raw, with a warning); True: fold (InputError for TopK);
        False: raw weights and the scale file.
    """
    out_dir = Path(out_dir)
    spec, p = exportable(sae, "saelens")
    fmt = spec.saelens
    normalized = not np.all(p["scale"] == 1)
    if fold_scale and not fmt.foldable:
        raise InputError(f"fold_scale is not possible for a {spec.name} SAE (rescaling its "
                         "features changes which of them are kept); export it unfolded")
    if fold_scale is None and normalized and not fmt.foldable:
        log.warning("a normalized %s SAE cannot have its scale folded into SAELens weights: "
                    "written raw, the scale in %s", spec.name, SAELENS_SCALE)
    fold = normalized and fmt.foldable and fold_scale is not False
    if fold:
        p = _fold(p)
    cfg: dict[str, Any] = {
        "d_in": sae.d_model, "d_sae": sae.n_features, "dtype": "float32", "device": "cpu",
        "apply_b_dec_to_input": spec.out_bias == "b_pre", "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": saelens_metadata(sae, "folded" if fold else "raw" if normalized else "none"),
    }
    weights = {}
    for name, leaf in fmt.leaves.items():
        if leaf.how == "cfg":
            cfg[leaf.key] = p[name].item()
        elif leaf.key is not None:
            weights[leaf.key] = as_tensor(stored_value(leaf, p[name], sae.n_features).astype(np.float32))
    if fmt.architecture == "topk":
        cfg["rescale_acts_by_decoder_norm"] = False
    cfg["architecture"] = fmt.architecture
    atomic_write(out_dir / SAELENS_WEIGHTS, save_bytes(weights))
    scale_file = out_dir / SAELENS_SCALE
    if normalized and not fold:
        atomic_write(scale_file, save_bytes({"scale": as_tensor(p["scale"])}))
    elif scale_file.exists():
        scale_file.unlink()
    atomic_write(out_dir / SAELENS_CFG, json.dumps(cfg, indent=2) + "\n")
    return out_dir


def _cfg_object(cfg: dict, key: str, cfg_path: Path) -> dict:
    """The JSON object ``cfg[key]`` ({} when absent or null)."""
    value = cfg.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError(f"{cfg_path}: key {key!r} holds {JSON_NAMES.get(type(value))}; "
                         "expected a JSON object")
    return value


def _cfg_positive_int(cfg: dict, key: str, cfg_path: Path, what: str) -> int:
    """``cfg[key]``, a positive integer (``what`` says what it counts, when it is missing)."""
    if key not in cfg:
        raise InputError(f"{cfg_path}: missing key {key!r} ({what})")
    value = cfg[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{cfg_path}: key {key!r} is {value!r}; expected a positive integer "
                         f"({what})")
    return value


def _provenance(cfg: dict, cfg_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(hparams, meta): ours from SAELens 6 ``metadata``, our older ``meta`` or a legacy top
    level."""
    md = _cfg_object(cfg, "metadata", cfg_path) or _cfg_object(cfg, "meta", cfg_path)

    def get(key):
        return md.get(key, cfg.get(key))

    ours = _cfg_object(md, "interplm_jax", cfg_path)
    meta = {"source": str(cfg_path.parent), "source_format": "saelens",
            "model": ours.get("model", get("model_name")), "layer": get("hook_layer")}
    meta.update({k: ours[k] for k in ("sweep", "id", "step", "store", "normalized_on") if k in ours})
    for key in ("hook_name", "model_class_name"):
        if get(key) is not None:
            meta[key] = get(key)
    if ours.get("scale") == "folded":
        meta["scale_folded"] = True  # raw features are the normalized ones
    hparams = _cfg_object(ours, "hparams", cfg_path)
    return hparams, meta


def read_saelens(folder: str | os.PathLike) -> SavedSAE:
    """Import a SAELens folder (standard, topk or jumprelu; legacy cfgs without architecture),
    keeping its model, layer and hook (``metadata``, or the older layouts).

    Raises:
      InputError for a ``cfg.json`` that is not a JSON object or lacks a size (``d_in``,
      ``d_sae``: positive integers), an unsupported architecture or input normalization, or a
      missing or misshapen tensor or one of other values (int, complex; naming the key).
    """
    folder = Path(folder)
    cfg_path, w_path = folder / SAELENS_CFG, folder / SAELENS_WEIGHTS
    cfg = read_json(cfg_path, f"{cfg_path}: missing (not a SAELens folder)", dict)
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
    if not isinstance(kind, str) or kind not in readable:
        raise InputError(f"{cfg_path}: architecture {kind!r} is not supported "
                         f"({', '.join(readable)})")
    spec, where = readable[kind], str(w_path)
    d = _cfg_positive_int(cfg, "d_in", cfg_path, "the input width d")
    F = _cfg_positive_int(cfg, "d_sae", cfg_path, "the number of features F")
    leaves = {name: leaf for name, leaf in spec.saelens.leaves.items() if leaf.how != "cfg"}
    params = read_leaves(spec, leaves, sd, {"d": d, "F": F}, SAELENS_DIMS, where)
    fn_kwargs = _cfg_object(cfg, "activation_fn_kwargs", cfg_path)
    for name, leaf in spec.saelens.leaves.items():
        if leaf.how == "cfg":  # SAELens 6 keeps k in cfg.json; older ones in activation_fn_kwargs
            source = cfg if cfg.get(leaf.key) is not None else fn_kwargs
            params[name] = np.array(_cfg_positive_int(source, leaf.key, cfg_path,
                                                      f"a {kind} SAE's {leaf.key}"), np.int32)
    # b_dec is subtracted from x (SAELens apply_b_dec_to_input) or not, and ours is (b_pre) or
    # not (b_dec): rewrite b_enc so that the function is the same, (x - b) W + c = x W + (c - b W)
    subtracts = cfg.get("apply_b_dec_to_input", True)
    if not isinstance(subtracts, bool):
        raise InputError(f"{cfg_path}: key 'apply_b_dec_to_input' is {subtracts!r}; expected "
                         "true or false")
    if subtracts != (spec.out_bias == "b_pre"):
        shift = params[spec.out_bias] @ params["W_enc"]
        params["b_enc"] = params["b_enc"] + (shift if not subtracts else -shift)
    scale = np.ones(F, np.float32)
    scale_path = folder / SAELENS_SCALE
    if scale_path.is_file():
        scale = take_tensor(load_file(str(scale_path)), "scale", (F,), "(d_sae,)", str(scale_path))
        check_non_negative(scale, "scale", str(scale_path))
    params["scale"] = scale
    hparams, meta = _provenance(cfg, cfg_path)
    return SavedSAE(spec.name, check_params(spec.name, params, where), hparams, meta)
