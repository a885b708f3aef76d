"""Replace ESM-2's hidden state after layer L inside a forward pass, through nnsight.

``hidden_states[L]`` of HF ESM-2 (L >= 1) is the output of ``esm.encoder.layer[L-1]``, except
for L = n_layers, where HF returns it after the final ``emb_layer_norm_after``; there we patch
that norm's output, as the reference does (``interplm.sae.intervention``). nnsight 0.8 serves
ESM's own ``output`` submodules as ``.E_output``, so ``.output`` is the module's output here.
"""

from __future__ import annotations

import os
import warnings
from typing import Callable

import torch

from interplm_jax.errors import InputError

Edit = Callable[[torch.Tensor], torch.Tensor]


def load_masked_lm(model: str | os.PathLike, device: str = "cpu"):
    """``EsmForMaskedLM`` (eval mode) and its tokenizer from a hub name or a local directory."""
    from transformers import AutoTokenizer, EsmForMaskedLM

    try:
        lm = EsmForMaskedLM.from_pretrained(str(model)).eval().to(device)
        tokenizer = AutoTokenizer.from_pretrained(str(model))
    except OSError as e:
        raise InputError(f"{model}: cannot load an ESM-2 masked LM: {e}") from None
    return lm, tokenizer


def wrap(lm) -> "NNsight":
    """The nnsight wrapper of an ``EsmForMaskedLM`` (its ``.E_output`` notices silenced)."""
    from nnsight import NNsight

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*nnsight already serves.*")
        return NNsight(lm)


def n_layers(nn_model) -> int:
    return len(nn_model.esm.encoder.layer)


def check_layer(nn_model, layer: int) -> None:
    n = n_layers(nn_model)
    if not 1 <= layer <= n:
        raise InputError(f"layer {layer} is out of range: this ESM-2 has layers 1..{n}")


def patch_point(nn_model, layer: int):
    """The nnsight envoy whose ``.output`` is ``hidden_states[layer]``."""
    check_layer(nn_model, layer)
    encoder = nn_model.esm.encoder
    if layer == n_layers(nn_model):
        return encoder.emb_layer_norm_after
    return encoder.layer[layer - 1]


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
def clean_forward(lm, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (B, T, vocab), hidden_states[layer] (B, T, d)) of the unmodified model."""
    out = lm(input_ids, attention_mask=attention_mask, output_hidden_states=True)
    return out.logits, out.hidden_states[layer]


def tokenize(tokenizer, sequences: list[str], device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """<cls> seq <eos> per sequence, padded with <pad>: (input_ids, attention_mask), (B, T)."""
    enc = tokenizer(list(sequences), return_tensors="pt", padding=True)
    return enc["input_ids"].to(device), enc["attention_mask"].to(device)
