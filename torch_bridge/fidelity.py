"""Loss recovered: the protein LM's cross-entropy with an SAE's reconstruction spliced in at layer L.

Computed as the reference's ``train/fidelity.py``: each protein is tokenized
``<cls> seq <eos>`` (padded in batches of similar lengths); the whole hidden state
``hidden_states[L]`` (every position of the batch) is replaced by the SAE's reconstruction, or by
zeros for the zero-ablation (through nnsight, which skips the blocks up to L: only those after L
run again); the cross-entropy of a protein is the mean over its residue positions (not
``<cls>``/``<eos>``) of -log p(true token); CE is the mean over proteins. Then

    loss_recovered = (CE_zero - CE_sae) / (CE_zero - CE_clean)

(1 for a perfect reconstruction, 0 for one as bad as zero-ablation). The reference reports it
clipped to [0, 1] and in percent (``pct_loss_recovered``, 0 when the denominator is ~0); we
report both. ``mask_fraction`` > 0 (e.g. 0.15) replaces that fraction of each protein's residues
(seeded, at least one) by ``<mask>`` in every run and scores only those positions (the masked-LM
objective; the reference scores unmasked inputs).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Iterable, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from interplm_jax.config import option
from interplm_jax.progress import progress_bar
from torch_bridge.intervene import check_sae, clean_states, logits_with_hidden, tokenize, wrap
from torch_bridge.sae import TorchSAE

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class FidelityConfig:
    """The ``fidelity:`` section of a study config (also the defaults of scripts/fidelity.py)."""

    max_proteins: int | None = option(None, "Held-out proteins scored (the first N); null: all.")
    mask_fraction: float = option(
        0.0, "0: score every residue of unmasked input (the reference); e.g. 0.15: mask that "
        "fraction per protein (seeded) and score those positions.")
    seed: int = option(0, "Seed of the masking.")
    batch_size: int = option(8, "Proteins per forward pass.")

    def __post_init__(self):
        if not 0.0 <= self.mask_fraction < 1.0:
            raise ValueError(f"mask_fraction must be in [0, 1), got {self.mask_fraction}")
        if self.batch_size < 1 or (self.max_proteins is not None and self.max_proteins < 1):
            raise ValueError("batch_size and max_proteins must be positive")


@dataclasses.dataclass(frozen=True)
class FidelityRow:
    """One SAE's fidelity. CEs are means over proteins, in nats."""

    sae_id: str
    ce_clean: float
    ce_zero: float
    ce_sae: float
    loss_recovered: float
    pct_loss_recovered: float
    n_proteins: int


def loss_recovered(ce_sae: float, ce_clean: float, ce_zero: float) -> float:
    """(CE_zero - CE_sae) / (CE_zero - CE_clean); NaN when the two baselines are equal."""
    denom = ce_zero - ce_clean
    return float("nan") if np.isclose(denom, 0.0) else float((ce_zero - ce_sae) / denom)


def pct_loss_recovered(ce_sae: float, ce_clean: float, ce_zero: float) -> float:
    """The reference's number: loss recovered clipped to [0, 1], in percent, 0 if undefined."""
    fr = loss_recovered(ce_sae, ce_clean, ce_zero)
    return 0.0 if np.isnan(fr) else float(np.clip(fr, 0.0, 1.0) * 100)


def per_protein_ce(logits: torch.Tensor, targets: torch.Tensor, scored: torch.Tensor) -> np.ndarray:
    """Mean CE over each protein's scored positions. (B, T, V), (B, T), (B, T) bool -> (B,)."""
    nll = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")  # (B, T)
    scored = scored.to(nll.dtype)
    return (torch.sum(nll * scored, dim=1) / scored.sum(dim=1)).cpu().numpy()


def _residue_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """True at residue positions: 1..len-2 of each row (len counts <cls> and <eos>)."""
    lengths = attention_mask.sum(dim=1, keepdim=True)
    pos = torch.arange(attention_mask.shape[1], device=attention_mask.device)[None]
    return (pos >= 1) & (pos < lengths - 1)


def _mask_positions(lengths: list[int], fraction: float, rng: np.random.Generator) -> list[np.ndarray]:
    """Per protein (in the given order), round(fraction * n) (>= 1) of its token positions
    1..n (n residues) to mask."""
    return [rng.choice(np.arange(1, n + 1), size=max(1, int(round(fraction * n))), replace=False)
            for n in lengths]


def fidelity_table(lm, tokenizer, sequences: list[str], layer: int,
                   saes: Mapping[str, TorchSAE], batch_size: int = 8,
                   mask_fraction: float = 0.0, seed: int = 0,
                   device: str = "cpu") -> list[FidelityRow]:
    """Fidelity of each SAE in ``saes`` at ``layer`` on ``sequences`` (clean/zero run once).

    Args:
      lm, tokenizer: a masked LM (``EsmForMaskedLM``, ``EsmcForMaskedLM``) and its tokenizer.
      sequences: held-out protein sequences.
      saes: SAE id -> SAE (all of width d_model of ``lm``).
      mask_fraction: 0 scores every residue of unmasked input (the reference); > 0 masks that
        fraction per protein and scores the masked positions.
    Returns:
      one :class:`FidelityRow` per SAE, in the order of ``saes``.
    """
    return fidelity_tables(lm, tokenizer, sequences, {layer: saes}, batch_size, mask_fraction, seed,
                           device)[layer]


def fidelity_tables(lm, tokenizer, sequences: list[str], saes: Mapping[int, Mapping[str, TorchSAE]],
                    batch_size: int = 8, mask_fraction: float = 0.0, seed: int = 0,
                    device: str = "cpu") -> dict[int, list[FidelityRow]]:
    """:func:`fidelity_table` of several layers at once (``saes``: layer -> SAE id -> SAE): one
    clean forward per batch serves them all. Returns layer -> rows."""
    if not sequences:
        raise ValueError("fidelity needs at least one protein")
    if not 0.0 <= mask_fraction < 1.0:
        raise ValueError(f"mask_fraction must be in [0, 1), got {mask_fraction}")
    nn_model = wrap(lm)
    for layer, by_id in saes.items():
        for sae in by_id.values():
            check_sae(nn_model, layer, sae)
    lengths = [len(s) for s in sequences]
    masked = _mask_positions(lengths, mask_fraction, np.random.default_rng(seed)) if mask_fraction > 0 else None
    # CE per protein in input order: "clean", and per layer its zero-ablation and SAEs
    ce = {k: np.zeros(len(sequences), np.float32)
          for k in ("clean", *((L, k) for L, by_id in saes.items() for k in ("zero", *by_id)))}
    order = np.argsort(lengths, kind="stable")  # batches of similar lengths: little padding
    bar = progress_bar(total=len(sequences), desc=f"fidelity L{','.join(map(str, saes))}", unit="protein")
    for start in range(0, len(sequences), batch_size):
        batch = order[start:start + batch_size]
        ids, attn = tokenize(tokenizer, [sequences[i] for i in batch], device)
        targets, scored = ids, _residue_mask(attn)
        bad = [int(i) for i, n in zip(batch, scored.sum(1).tolist()) if n != lengths[i]]
        if bad:
            raise ValueError(f"protein {bad[0]} of {len(sequences)}: the tokenizer does not give one "
                             f"token per residue ({lengths[bad[0]]} residues)")
        if masked is not None:
            scored = torch.zeros_like(scored)
            for row, i in enumerate(batch):
                scored[row, torch.from_numpy(masked[i])] = True
            ids = ids.masked_fill(scored, tokenizer.mask_token_id)
        logits, states = clean_states(lm, ids, attn)
        ce["clean"][batch] = per_protein_ce(logits, targets, scored)
        for layer, by_id in saes.items():
            hidden = states[layer]
            zero = logits_with_hidden(nn_model, ids, attn, layer, torch.zeros_like(hidden))
            ce[layer, "zero"][batch] = per_protein_ce(zero, targets, scored)
            for sae_id, sae in by_id.items():
                with torch.inference_mode():
                    recon = sae(hidden)
                patched = logits_with_hidden(nn_model, ids, attn, layer, recon)
                ce[layer, sae_id][batch] = per_protein_ce(patched, targets, scored)
        bar.update(len(batch))
    bar.close()
    mean = {k: float(np.mean(v)) for k, v in ce.items()}
    tables = {}
    for layer, by_id in saes.items():
        clean, zero = mean["clean"], mean[layer, "zero"]
        tables[layer] = [FidelityRow(sae_id, clean, zero, mean[layer, sae_id],
                                     loss_recovered(mean[layer, sae_id], clean, zero),
                                     pct_loss_recovered(mean[layer, sae_id], clean, zero), len(sequences))
                         for sae_id in by_id]
        for r in tables[layer]:
            log.info("layer %d %s: CE clean %.4f zero %.4f sae %.4f -> loss recovered %.4f", layer, r.sae_id,
                     r.ce_clean, r.ce_zero, r.ce_sae, r.loss_recovered)
    return tables


def format_table(rows: Iterable[FidelityRow]) -> str:
    """Tab-separated table with a header line."""
    fields = [f.name for f in dataclasses.fields(FidelityRow)]
    lines = ["\t".join(fields)]
    for r in rows:
        vals = [getattr(r, f) for f in fields]
        lines.append("\t".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in vals))
    return "\n".join(lines) + "\n"
