"""Protein language model families through transformers: ESM-2 and ESM C, behind one interface.

A layer ``L`` of any family means ``hidden_states[L]`` of the transformers model (DESIGN.md
section 7): ``0`` = the token embeddings, ``1 <= L < n_layers`` = the output of block ``L``, and
``L = n_layers`` = the output of the last block *after the model's final norm* (ESM-2:
``esm.encoder.emb_layer_norm_after``; ESM C: ``esmc.norm``), which is what transformers returns
as the last entry for both families. :func:`module_path` names the module whose output that is,
inside the masked LM (the nnsight patch point and the SAELens ``hook_name``).

Loading is strict: a checkpoint is loaded with the class its ``config.json`` declares, and any
weight the class needs that the checkpoint does not provide (or provides with another shape) is
an :class:`InputError` naming the tensors, never a silent random initialisation.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

import torch

from interplm_jax.atomic import atomic_dir
from interplm_jax.errors import InputError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Family:
    """How one model family is laid out in transformers.

    Attributes:
      name: our name, recorded in store manifests (``model_family``).
      model_type: ``config.model_type`` of its checkpoints.
      base_class, masked_lm_class: transformers class names of the encoder and the masked LM.
      prefix: attribute of the masked LM holding the encoder (``lm.<prefix>``).
      embeddings, blocks, final_norm: module paths inside the encoder.
      base_kwargs: extra ``from_pretrained`` arguments of the encoder class.
      unused: name parts of tensors that neither the hidden states nor the LM head depend on
        (ESM-2's contact-prediction head): a checkpoint without them is accepted.
    """

    name: str
    model_type: str
    base_class: str
    masked_lm_class: str
    prefix: str
    embeddings: str
    blocks: str
    final_norm: str
    base_kwargs: tuple[tuple[str, object], ...] = ()
    unused: tuple[str, ...] = ()

    def module_path(self, layer: int, n_layers: int) -> str:
        """Dotted path in the masked LM of the module whose output is ``hidden_states[layer]``."""
        if not 0 <= layer <= n_layers:
            raise InputError(f"layer {layer} is out of range for {self.name} (0..{n_layers}; "
                             "0 = embeddings)")
        if layer == 0:
            return f"{self.prefix}.{self.embeddings}"
        if layer == n_layers:
            return f"{self.prefix}.{self.final_norm}"
        return f"{self.prefix}.{self.blocks}.{layer - 1}"

    def transformers_class(self, masked_lm: bool):
        import transformers

        return getattr(transformers, self.masked_lm_class if masked_lm else self.base_class)


FAMILIES = {
    "esm2": Family("esm2", "esm", "EsmModel", "EsmForMaskedLM", "esm", "embeddings",
                   "encoder.layer", "encoder.emb_layer_norm_after",
                   base_kwargs=(("add_pooling_layer", False),), unused=("contact_head.",)),
    "esmc": Family("esmc", "esmc", "EsmcModel", "EsmcForMaskedLM", "esmc", "embed_tokens",
                   "layers", "norm"),
}


def _supported() -> str:
    return ", ".join(f"{f.name} (model_type {f.model_type!r})" for f in FAMILIES.values())


def family_named(name: str) -> Family:
    """The family called ``name`` (``esm2`` | ``esmc``)."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise InputError(f"unknown model family {name!r}; supported: {_supported()}") from None


def family_of_config(config) -> Family:
    """The family of a transformers config, by its ``model_type``."""
    for f in FAMILIES.values():
        if f.model_type == config.model_type:
            return f
    raise InputError(f"unsupported model type {config.model_type!r}; supported families: {_supported()}")


def load_config(name_or_path: str | os.PathLike):
    """The transformers config of a hub name or local directory (``InputError`` if unreadable)."""
    from transformers import AutoConfig

    name = os.fspath(name_or_path)
    try:
        return AutoConfig.from_pretrained(name)
    except (OSError, ValueError, KeyError) as e:
        raise InputError(f"cannot load a model config from {name!r}: {e}") from None


def detect_family(name_or_path: str | os.PathLike) -> Family:
    """The family of a checkpoint, from its ``config.json``."""
    return family_of_config(load_config(name_or_path))


def hook_name(family: str, layer: int, n_layers: int) -> str:
    """SAELens ``hook_name`` (module path in the masked LM) of ``hidden_states[layer]``.

    e.g. ``hook_name("esm2", 3, 6) == "esm.encoder.layer.2"``,
    ``hook_name("esm2", 6, 6) == "esm.encoder.emb_layer_norm_after"``,
    ``hook_name("esmc", 30, 30) == "esmc.norm"``.
    """
    return family_named(family).module_path(layer, n_layers)


def hook_name_of(model: dict, layer: int) -> str:
    """:func:`hook_name` from a store manifest's ``model`` record (stores written before
    ``model_family`` was recorded hold ESM-2)."""
    return hook_name(model.get("model_family", "esm2"), int(layer), int(model["n_layers"]))


def submodule(root, path: str):
    """``root.a.b.3`` for ``path = "a.b.3"``; works on torch modules and nnsight envoys."""
    for part in path.split("."):
        root = root[int(part)] if part.isdigit() else getattr(root, part)
    return root


def _check_loading(name: str, cls, info: dict, family: Family) -> None:
    """Refuse a checkpoint that left weights of ``cls`` at their random initial values."""
    problems = []
    missing = sorted(k for k in info.get("missing_keys") or () if not any(u in k for u in family.unused))
    if missing:
        problems.append(f"{len(missing)} tensor(s) missing from the checkpoint: "
                        f"{', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}")
    mismatched = sorted(str(k) for k in info.get("mismatched_keys") or ())
    if mismatched:
        problems.append(f"{len(mismatched)} tensor(s) of another shape: {', '.join(mismatched[:6])}")
    problems += [str(m) for m in info.get("error_msgs") or ()]
    if problems:
        raise InputError(f"{name}: the checkpoint's weights do not all load into {cls.__name__} "
                         f"(they would be random): {'; '.join(problems)}")
    unexpected = sorted(info.get("unexpected_keys") or ())
    if unexpected:  # e.g. the lm_head of a masked-LM checkpoint loaded as the encoder
        log.debug("%s: checkpoint tensors not used by %s: %s", name, cls.__name__, unexpected)


def load_model(name_or_path: str | os.PathLike, masked_lm: bool = False, device: str | None = None,
               dtype: torch.dtype = torch.float32):
    """Load a protein LM (any supported family) and its tokenizer, refusing partial loads.

    Args:
      name_or_path: hub name (``facebook/esm2_t6_8M_UR50D``, ``biohub/ESMC-300M``) or directory.
      masked_lm: the masked LM (with its head: fidelity, steering) instead of the encoder alone.
      device: torch device (default: CUDA when available, else CPU).
    Returns:
      ``(model, tokenizer, family)``; the model in eval mode on ``device``.
    Raises:
      InputError: unreadable, unsupported family, or weights that do not all load.
    """
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    name = os.fspath(name_or_path)
    family = detect_family(name)
    cls = family.transformers_class(masked_lm)
    kwargs = {} if masked_lm else dict(family.base_kwargs)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its load report; we check the same information below
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        model, info = cls.from_pretrained(name, dtype=dtype, output_loading_info=True,
                                          ignore_mismatched_sizes=True, **kwargs)  # refused below
    except OSError as e:
        raise InputError(f"cannot load {family.name} model {name!r}: {e}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    _check_loading(name, cls, info, family)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return model.to(torch.device(device)).eval(), tokenizer, family


def load_masked_lm(name_or_path: str | os.PathLike, device: str = "cpu"):
    """The masked LM (eval mode) and its tokenizer of any supported family."""
    lm, tokenizer, _ = load_model(name_or_path, masked_lm=True, device=device)
    return lm, tokenizer


def random_init(name_or_path: str | os.PathLike, seed: int = 0):
    """A masked LM of the same family and config as ``name_or_path`` with fresh random weights.

    The weights come from the family's own transformers initialisation under
    ``torch.manual_seed(seed)`` (the same seed gives the same model; the caller's torch random
    state is left as it was); only the config and the tokenizer of the source are read.
    Returns ``(lm, tokenizer)``.
    """
    from transformers import AutoTokenizer

    name = os.fspath(name_or_path)
    config = load_config(name)
    family = family_of_config(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        lm = family.transformers_class(masked_lm=True)(config).eval()
    return lm, AutoTokenizer.from_pretrained(name)


def save_random_init(source: str | os.PathLike, out: str | os.PathLike, seed: int = 0) -> Path:
    """:func:`random_init` of ``source`` saved into the new directory ``out`` (it loads like its
    source); ``out/random_init.json`` records the source, family and seed."""
    out = new_model_dir(out)
    lm, tokenizer = random_init(source, seed)
    family = family_of_config(lm.config).name
    save_variant(lm, tokenizer, out, "random_init.json",
                 {"source": os.fspath(source), "family": family, "seed": seed})
    log.info("saved a randomly initialised %s of the config of %s (seed %d) to %s", family, source, seed, out)
    return out


def new_model_dir(out: str | os.PathLike) -> Path:
    """``out`` as a Path; ``InputError`` if it exists (a derived model never overwrites one)."""
    out = Path(out)
    if out.exists():
        raise InputError(f"{out}: already exists; choose a new directory for the model")
    return out


def save_variant(lm, tokenizer, out: str | os.PathLike, record_name: str, record: dict) -> Path:
    """Save a derived model (shuffled, random-init) with ``save_pretrained`` into a new directory.

    ``out`` then loads like the original; ``out/<record_name>`` records how it was made.
    """
    out = new_model_dir(out)
    with atomic_dir(out) as tmp:
        lm.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / record_name).write_text(json.dumps(record, indent=1) + "\n")
    return out
