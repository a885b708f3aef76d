"""Replace a protein LM's hidden state after layer L inside a forward pass, through nnsight.

``hidden_states[L]`` (L >= 1) is the output of block L, except for L = n_layers, where
transformers returns it after the model's final norm; there we patch that norm's output, as the
reference does for ESM-2 (``interplm.sae.intervention``). The module of each layer comes from
the model's family (``torch_bridge.models.Family.module_path``: ESM-2 and ESM C). nnsight 0.8
serves ESM-2's own ``output`` submodules as ``.E_output``, so ``.output`` is the module's output.
"""

from __future__ import annotations

import warnings
from typing import Callable

import torch

from interplm_jax.errors import InputError
from torch_bridge.models import family_of_config, submodule

Edit = Callable[[torch.Tensor], torch.Tensor]


def wrap(lm) -> "NNsight":
    """The nnsight wrapper of a masked LM (ESM-2's ``.E_output`` notices silenced)."""
    from nnsight import NNsight

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*nnsight already serves.*")
        return NNsight(lm)


def n_layers(nn_model) -> int:
    return nn_model.config.num_hidden_layers


def check_layer(nn_model, layer: int) -> None:
    n = n_layers(nn_model)
    if not 1 <= layer <= n:
        name = family_of_config(nn_model.config).name
        raise InputError(f"layer {layer} is out of range: this {name} model has layers 1..{n}")


def check_sae(nn_model, layer: int, sae) -> None:
    """``layer`` exists and ``sae`` (a :class:`~torch_bridge.sae.TorchSAE`) reads vectors of the
    model's width; :class:`InputError` otherwise."""
    check_layer(nn_model, layer)
    d, d_sae = nn_model.config.hidden_size, int(sae.W_enc.shape[0])
    if d_sae != d:
        name = family_of_config(nn_model.config).name
        raise InputError(f"the SAE reads vectors of width {d_sae}, but this {name} model's layers "
                         f"have width {d}: an SAE of another model?")


def patch_point(nn_model, layer: int):
    """The nnsight envoy whose ``.output`` is ``hidden_states[layer]``."""
    check_layer(nn_model, layer)
    family = family_of_config(nn_model.config)
    return submodule(nn_model, family.module_path(layer, n_layers(nn_model)))


@torch.inference_mode()
def logits_with_edit(nn_model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     layer: int, edit: Edit | None = None) -> torch.Tensor:
    """Logits (B, T, vocab) with ``hidden_states[layer]`` replaced by ``edit(h)``.

    Args:
      input_ids, attention_mask: (B, T) token ids and mask (1 = real token).
      edit: h (B, T, d) -> h' (B, T, d); None runs the clean model (through the same trace).
    """
    with nn_model.trace(input_ids, attention_mask=attention_mask):
        if edit is not None:
            point = patch_point(nn_model, layer)
            point.output = edit(point.output)
        logits = nn_model.output.logits.save()
    return logits


@torch.inference_mode()
def logits_with_hidden(nn_model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                       layer: int, hidden: torch.Tensor) -> torch.Tensor:
    """Logits (B, T, vocab) with ``hidden_states[layer]`` set to ``hidden`` (B, T, d).

    The same logits as ``logits_with_edit(..., lambda h: hidden)``, at the cost of the blocks
    after ``layer`` only: every block up to the patch point is skipped (nnsight's ``skip``; each
    block reads only the previous one's output, so what they would compute is overwritten).
    """
    check_layer(nn_model, layer)
    family, n = family_of_config(nn_model.config), n_layers(nn_model)
    paths = [f"{family.prefix}.{family.blocks}.{i}" for i in range(layer)]
    if layer == n:  # hidden_states[n] is the final norm's output
        paths.append(family.module_path(n, n))
    with nn_model.trace(input_ids, attention_mask=attention_mask):
        for path in paths:  # in execution order, as nnsight requires
            submodule(nn_model, path).skip(hidden)
        logits = nn_model.output.logits.save()
    return logits


@torch.inference_mode()
def clean_states(lm, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, tuple]:
    """(logits (B, T, vocab), hidden_states: n_layers + 1 tensors (B, T, d)) of the unmodified model."""
    out = lm(input_ids, attention_mask=attention_mask, output_hidden_states=True)
    return out.logits, out.hidden_states


def clean_forward(lm, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (B, T, vocab), hidden_states[layer] (B, T, d)) of the unmodified model."""
    logits, states = clean_states(lm, input_ids, attention_mask)
    return logits, states[layer]


def tokenize(tokenizer, sequences: list[str], device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """<cls> seq <eos> per sequence, padded with <pad>: (input_ids, attention_mask), (B, T)."""
    enc = tokenizer(list(sequences), return_tensors="pt", padding=True)
    return enc["input_ids"].to(device), enc["attention_mask"].to(device)
