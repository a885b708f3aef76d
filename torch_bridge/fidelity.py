"""Loss recovered: the protein LM's cross-entropy with an SAE's reconstruction spliced in at layer L.

Computed as the reference's ``train/fidelity.py``: each protein is tokenized
``<cls> seq <eos>`` (padded in batches); the whole hidden state ``hidden_states[L]`` (every
position of the batch) is replaced by the SAE's reconstruction, or by zeros for the
zero-ablation; the cross-entropy of a protein is the mean over its residue positions (not
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
from torch_bridge.intervene import check_sae, clean_forward, logits_with_edit, tokenize, wrap
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


def _mask_positions(residues: torch.Tensor, fraction: float, rng: np.random.Generator) -> torch.Tensor:
    """Choose round(fraction * n) (>= 1) residue positions per row to mask. (B, T) bool."""
    out = torch.zeros_like(residues)
    for b in range(residues.shape[0]):
        idx = torch.nonzero(residues[b]).flatten().cpu().numpy()
        n = max(1, int(round(fraction * len(idx))))
        out[b, torch.from_numpy(rng.choice(idx, size=n, replace=False))] = True
    return out


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
    if not sequences:
        raise ValueError("fidelity needs at least one protein")
    if not 0.0 <= mask_fraction < 1.0:
        raise ValueError(f"mask_fraction must be in [0, 1), got {mask_fraction}")
    nn_model = wrap(lm)
    for sae in saes.values():
        check_sae(nn_model, layer, sae)
    rng = np.random.default_rng(seed)
    ce: dict[str, list[np.ndarray]] = {"clean": [], "zero": [], **{k: [] for k in saes}}
    bar = progress_bar(total=len(sequences), desc=f"fidelity L{layer}", unit="protein")
    for start in range(0, len(sequences), batch_size):
        ids, attn = tokenize(tokenizer, sequences[start:start + batch_size], device)
        targets, scored = ids, _residue_mask(attn)
        if mask_fraction > 0:
            scored = _mask_positions(scored, mask_fraction, rng)
            ids = ids.masked_fill(scored, tokenizer.mask_token_id)
        logits, hidden = clean_forward(lm, ids, attn, layer)
        ce["clean"].append(per_protein_ce(logits, targets, scored))
        zero = logits_with_edit(nn_model, ids, attn, layer, torch.zeros_like)
        ce["zero"].append(per_protein_ce(zero, targets, scored))
        for sae_id, sae in saes.items():
            with torch.inference_mode():
                recon = sae(hidden)
            patched = logits_with_edit(nn_model, ids, attn, layer, lambda h, r=recon: r)
            ce[sae_id].append(per_protein_ce(patched, targets, scored))
        bar.update(len(ids))
    bar.close()
    mean = {k: float(np.mean(np.concatenate(v))) for k, v in ce.items()}
    rows = []
    for sae_id in saes:
        args = (mean[sae_id], mean["clean"], mean["zero"])
        rows.append(FidelityRow(sae_id, mean["clean"], mean["zero"], mean[sae_id],
                                loss_recovered(*args), pct_loss_recovered(*args), len(sequences)))
        log.info("%s: CE clean %.4f zero %.4f sae %.4f -> loss recovered %.4f", sae_id,
                 *(mean[k] for k in ("clean", "zero", sae_id)), rows[-1].loss_recovered)
    return rows


def format_table(rows: Iterable[FidelityRow]) -> str:
    """Tab-separated table with a header line."""
    fields = [f.name for f in dataclasses.fields(FidelityRow)]
    lines = ["\t".join(fields)]
    for r in rows:
        vals = [getattr(r, f) for f in fields]
        lines.append("\t".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in vals))
    return "\n".join(lines) + "\n"
