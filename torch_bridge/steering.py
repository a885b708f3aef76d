"""Steer a protein LM by clamping SAE features inside its forward pass (nnsight on its masked LM).

At layer L, with h = hidden_states[L] (T, d): f = encode(h), err = h - decode(f); the chosen
features are clamped to chosen values at chosen positions, giving f', and the model continues
from h' = decode(f') + err. We compute h' as h + (f' - f) W_dec, which is the same quantity
(decode is affine) but exact in floating point: with nothing clamped h' is h bit for bit, and
clamping feature i at a position moves h there by exactly (value - f_i) * W_dec[i].

Values are in the SAE's normalized units by default (1 = the feature's maximum over the
normalization set; identical to raw units for an SAE that was never normalized);
``units="raw"`` clamps raw activations.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, Mapping, Sequence

import numpy as np
import torch

from interplm_jax.errors import InputError
from interplm_jax.fasta import alphabet_problem
from torch_bridge.intervene import check_sae, logits_with_edit, tokenize, wrap
from torch_bridge.sae import TorchSAE

AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"


@dataclasses.dataclass(frozen=True)
class Clamp:
    """Set ``feature`` to ``value`` at residue ``positions`` (0-based; None = every residue)."""

    feature: int
    value: float
    positions: tuple[int, ...] | None = None


@dataclasses.dataclass(frozen=True)
class SteeringResult:
    """Per condition, softmax probabilities over the vocabulary at each residue.

    Attributes:
      names: condition names, in order.
      probs: (C, length, vocab) float32; position p is residue p of the sequence.
      vocab: token strings in vocabulary order.
    """

    sequence: str
    names: tuple[str, ...]
    probs: np.ndarray
    vocab: tuple[str, ...]

    def aa_probs(self, amino_acids: str = AMINO_ACIDS) -> np.ndarray:
        """(C, length, len(amino_acids)) probabilities of the given amino-acid tokens."""
        idx = [self.vocab.index(a) for a in amino_acids]
        return self.probs[:, :, idx]


def _clamp_edit(sae: TorchSAE, clamps: Sequence[Sequence[Clamp]], units: str, length: int,
                record: dict | None = None):
    """The nnsight edit for a batch whose row c carries condition ``clamps[c]``."""
    def edit(h: torch.Tensor) -> torch.Tensor:  # h: (C, T, d), residue p at token p + 1
        f = sae.encode_raw(h)
        f_new = f.clone()
        for c, cond in enumerate(clamps):
            for cl in cond:
                pos = torch.arange(length) if cl.positions is None else torch.tensor(cl.positions)
                value = torch.tensor([float(cl.value)], dtype=f.dtype)
                feat = torch.tensor([cl.feature])
                raw = sae.to_raw(value, feat) if units == "normalized" else value
                f_new[c, pos + 1, cl.feature] = raw
        h_new = h + (f_new - f) @ sae.W_dec
        if record is not None:
            record.update(h=h.clone(), f=f.clone(), h_new=h_new.clone())
        return h_new
    return edit


def _check(sae: TorchSAE, sequence: str, conditions: Mapping[str, Sequence[Clamp]], units: str):
    if units not in ("normalized", "raw"):
        raise InputError(f"units must be 'normalized' or 'raw', got {units!r}")
    bad = alphabet_problem(sequence) if sequence else "empty"
    if bad:  # the tokenizer would take them as <unk>, silently
        raise InputError(f"sequence {sequence[:30]!r}: {bad}")
    for name, cond in conditions.items():
        for cl in cond:
            if not 0 <= cl.feature < sae.n_features:
                raise InputError(f"condition {name!r}: feature {cl.feature} is out of range "
                                 f"(the SAE has {sae.n_features} features)")
            bad = [p for p in (cl.positions or ()) if not 0 <= p < len(sequence)]
            if bad:
                raise InputError(f"condition {name!r}: positions {bad} are outside the "
                                 f"sequence (length {len(sequence)}, 0-based)")
            if units == "normalized" and float(sae.scale[cl.feature]) == 0.0:
                raise InputError(f"condition {name!r}: feature {cl.feature} was never active on "
                                 "the normalization set (scale 0); clamp it with units='raw'")


def steer(lm, tokenizer, sae: TorchSAE, layer: int, sequence: str,
          conditions: Mapping[str, Sequence[Clamp]], units: Literal["normalized", "raw"] = "normalized",
          batch_size: int = 16, nn_model=None, record: dict | None = None) -> SteeringResult:
    """Run ``sequence`` once per steering condition; return probabilities per residue.

    Args:
      lm, tokenizer: a masked LM (``EsmForMaskedLM``, ``EsmcForMaskedLM``) and its tokenizer.
      sae: the SAE for ``layer`` (width d_model of ``lm``).
      conditions: name -> clamps (an empty list = the unsteered model).
      units: "normalized" (default) or "raw" clamp values.
      record: if given, receives h, f and h' (tensors of the last batch) for inspection.
    """
    _check(sae, sequence, conditions, units)
    nn_model = nn_model or wrap(lm)
    check_sae(nn_model, layer, sae)
    names = tuple(conditions)
    ids, attn = tokenize(tokenizer, [sequence])
    probs = []
    for start in range(0, len(names), batch_size):
        chunk = [conditions[n] for n in names[start:start + batch_size]]
        edit = _clamp_edit(sae, chunk, units, len(sequence), record)
        logits = logits_with_edit(nn_model, ids.expand(len(chunk), -1),
                                  attn.expand(len(chunk), -1), layer, edit)
        probs.append(torch.softmax(logits[:, 1:len(sequence) + 1].float(), dim=-1).numpy())
    tokens = tokenizer.convert_ids_to_tokens(list(range(lm.config.vocab_size)))
    vocab = tuple(t if t is not None else f"<unused{i}>" for i, t in enumerate(tokens))  # ESM C pads to 64
    return SteeringResult(sequence, names, np.concatenate(probs), vocab)


def clamp_sweep(feature: int, values: Sequence[float], positions: Sequence[int] | None = None,
                include_unsteered: bool = True) -> dict[str, list[Clamp]]:
    """Conditions for one feature clamped to each of ``values`` (plus the unsteered run)."""
    pos = None if positions is None else tuple(int(p) for p in positions)
    conds: dict[str, list[Clamp]] = {"unsteered": []} if include_unsteered else {}
    for v in values:
        conds[f"f{feature}={v:g}"] = [Clamp(int(feature), float(v), pos)]
    return conds
