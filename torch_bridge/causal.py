"""The causal test through nnsight: zero or clamp one SAE feature at chosen residues and measure
the change in the masked LM's log-probability of the true residue there (docs/bench.md).

At layer L, with h = hidden_states[L] and f = encode(h), the edited feature vector f' differs
from f in feature j at the chosen positions only; the model continues from
decode(f') + (h - decode(f)) (the SAE's edited reconstruction plus its error term), computed as
h + (f'_j - f_j) W_dec[j] -- the same quantity (decode is affine), exact in floating point, so
an edit that changes nothing leaves the model's output unchanged.

Scoring: unmasked input, log p(true residue) at the edited positions, as fidelity.py scores by
default. The features are measured (concept F1, normalization) on unmasked sequences; masking
the positions would change the very activations being edited (a feature that fires on a residue
rarely fires on ``<mask>``), and masking one position at a time would cost a forward pass per
residue.

One nnsight trace runs ``batch_rows`` (protein, intervention) rows at once from the edited hidden
state (the blocks before the layer are skipped: they would recompute the clean one); an
intervention that changes nothing in a protein (zeroing a feature that is already 0 there) is
not run: its change is exactly 0.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch

from interplm_jax.bench.causal import OPS, CausalConfig, ChosenPair, Site, effect_columns, frequencies, null_features
from interplm_jax.errors import InputError
from interplm_jax.layout import MAIN
from interplm_jax.normalize import FeatureStats
from interplm_jax.progress import progress_bar
from torch_bridge.intervene import check_sae, clean_forward, logits_with_hidden, tokenize, wrap
from torch_bridge.sae import TorchSAE

log = logging.getLogger(__name__)


def true_logprobs(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """log p(input token) at every position. (B, T, V), (B, T) -> (B, T) float32."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return torch.gather(logp, -1, ids[..., None])[..., 0]


def edited_logprobs(nn_model, ids: torch.Tensor, attn: torch.Tensor, layer: int, hidden: torch.Tensor,
                    directions: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    """log p(true token) with hidden_states[layer] set to hidden + coef[r, t] * directions[r]: one
    trace, the blocks before ``layer`` skipped (:func:`~torch_bridge.intervene.logits_with_hidden`).

    Args:
      ids, attn: (R, T) token ids and mask (row r: one protein under one intervention).
      hidden: (R, T, d) the clean hidden_states[layer] of each row's protein.
      directions: (R, d) the decoder row of each row's edited feature.
      coef: (R, T) f'_j - f_j per position (0 where nothing changes).
    Returns:
      (R, T) log-probabilities of the input tokens.
    """
    edited = hidden + coef[..., None].to(hidden.dtype) * directions[:, None, :].to(hidden.dtype)
    return true_logprobs(logits_with_hidden(nn_model, ids, attn, layer, edited), ids)


def intervention_deltas(lm, tokenizer, sae: TorchSAE, layer: int, sites: Sequence[Site],
                        features: Sequence[int], targets: Sequence[float], batch_size: int = 8,
                        batch_rows: int = 64, nn_model=None, device: str = "cpu") -> dict:
    """Per intervention k (feature ``features[k]`` set to raw value ``targets[k]`` at each site's
    positions), the change in log p(true residue) at every site position.

    Returns:
      {"delta": (K, n) float64 (n: the sites' positions, concatenated in order),
       "clean": (n,) clean log-probabilities, "act": (K, n) the features' raw clean values there}.
    """
    nn_model = nn_model or wrap(lm)
    check_sae(nn_model, layer, sae)
    feats = torch.as_tensor(np.asarray(features, np.int64))
    target = torch.as_tensor(np.asarray(targets, np.float32))
    K = len(feats)
    delta, clean_all, act_all = [], [], []
    for start in range(0, len(sites), batch_size):
        batch = sites[start:start + batch_size]
        ids, attn = tokenize(tokenizer, [s.sequence for s in batch], device)
        B, T = ids.shape
        mask = torch.zeros(B, T, dtype=torch.bool)
        for b, s in enumerate(batch):
            mask[b, torch.as_tensor(s.positions) + 1] = True  # residue p is token p + 1
        logits, hidden = clean_forward(lm, ids, attn, layer)
        clean = true_logprobs(logits, ids).cpu()
        with torch.inference_mode():
            f = sae.encode_raw(hidden)[..., feats.to(hidden.device)].cpu().float()  # (B, T, K)
        coef = torch.where(mask[:, :, None], target - f, 0.0).permute(2, 0, 1)  # (K, B, T)
        edited = clean[None].expand(K, B, T).clone()  # unchanged rows keep the clean values
        # (b, k) pairs with an edit, protein-major: a chunk holds few proteins, cut to their length
        b_all, k_all = torch.nonzero(coef.abs().amax(dim=2).T > 0).T
        W = sae.W_dec[feats]  # (K, d)
        lengths = attn.sum(dim=1).cpu()
        for a in range(0, len(b_all), batch_rows):
            b, k = b_all[a:a + batch_rows], k_all[a:a + batch_rows]
            t = int(lengths[b].max())
            edited[k, b, :t] = edited_logprobs(nn_model, ids[b, :t], attn[b, :t], layer, hidden[b, :t], W[k],
                                               coef[k, b, :t].to(device)).cpu()
        delta.append((edited - clean[None])[:, mask].double().numpy())
        clean_all.append(clean[mask].double().numpy())
        act_all.append(f.permute(2, 0, 1)[:, mask].double().numpy())
    return {"delta": np.concatenate(delta, axis=1), "clean": np.concatenate(clean_all),
            "act": np.concatenate(act_all, axis=1)}


def causal_rows(lm, tokenizer, sae: TorchSAE, stats: FeatureStats, layer: int,
                pairs: Sequence[ChosenPair], sites: dict[str, list[Site]], cfg: CausalConfig = CausalConfig(),
                model: str = MAIN, sae_name: str = "sae", device: str = "cpu") -> tuple[list[dict], list[str]]:
    """The causal test of each (concept, feature) pair against its null of random live features
    of similar activation frequency (``stats``: the SAE's normalization statistics).

    Returns:
      (rows of the causal table, one per tested concept (q-values not yet filled); warnings
      for concepts left out: no annotated test protein, or a feature dead on the normalization set).
    """
    if len(stats.max) != sae.n_features:
        raise InputError(f"the feature statistics have {len(stats.max)} features, the SAE {sae.n_features}")
    nn_model = wrap(lm)
    check_sae(nn_model, layer, sae)
    freq, live = frequencies(stats), (stats.n_active > 0) & (stats.max > 0)
    rows, notes = [], []
    bar = progress_bar(total=len(pairs), desc=f"causal L{layer}", unit="concept")
    for pair in pairs:
        bar.update(1)
        where = f"layer {layer}, concept {pair.concept!r}, feature {pair.feature}"
        if not sites.get(pair.concept):
            notes.append(f"causal test, {where}: no test protein annotated with it; not tested")
            continue
        if not live[pair.feature]:
            notes.append(f"causal test, {where}: the feature never fired on the normalization set; not tested")
            continue
        rng = np.random.default_rng([cfg.seed, layer, pair.feature])
        null = null_features(freq, live, pair.feature, cfg.null_size, rng)
        if not len(null):
            notes.append(f"causal test, {where}: no other live feature to compare with; not tested")
            continue
        feats = np.concatenate([[pair.feature], null])
        res = intervention_deltas(lm, tokenizer, sae, layer, sites[pair.concept],
                                  np.concatenate([feats, feats]), np.concatenate([np.zeros(len(feats)), stats.max[feats]]),
                                  cfg.batch_size, cfg.batch_rows, nn_model, device)
        effect = res["delta"].mean(axis=1).reshape(len(OPS), len(feats))  # (op, feature)
        row = {"model": model, "layer": layer, "sae": sae_name, "concept": pair.concept, "feature": pair.feature,
               "valid_f1": pair.valid_f1, "test_f1": pair.test_f1, "freq": float(freq[pair.feature]),
               "act_mean": float(res["act"][0].mean() / stats.max[pair.feature]),
               "n_proteins": len(sites[pair.concept]), "n_residues": res["delta"].shape[1],
               "null_size": len(null), "null_freq_min": float(freq[null].min()),
               "null_freq_max": float(freq[null].max()), "logp_clean": float(res["clean"].mean())}
        for i, op in enumerate(OPS):
            row.update(effect_columns(op, effect[i, 0], effect[i, 1:]))
        rows.append(row)
        log.info("%s: %d residues of %d proteins; zero %+.4f (p %.3g), clamp %+.4f (p %.3g) nats", where,
                 row["n_residues"], row["n_proteins"], row["delta_zero"], row["p_zero"], row["delta_clamp"],
                 row["p_clamp"])
    bar.close()
    return rows, notes


def causal_layer(model, labels_path, evalset_path, layer: int, sae_dir, pairs_path, out,
                 cfg: CausalConfig = CausalConfig(), model_name: str = MAIN, device: str = "cpu",
                 lm_tokenizer=None) -> tuple[list[dict], list[str]]:
    """The causal test of one layer's chosen SAE (``sae_dir``) on the concepts of ``pairs_path``
    (a ``per_concept`` table of the concept report), written to the table ``out``.

    Args:
      model: hub name or directory of the masked LM (ignored when ``lm_tokenizer`` is given).
    Returns:
      (rows, warnings) as :func:`causal_rows`.
    """
    from pathlib import Path

    from interplm_jax.bench.causal import concept_sites, read_pairs, sae_stats, write_causal
    from interplm_jax.concepts.evalset import EvalSet
    from interplm_jax.concepts.labels import ConceptLabels
    from interplm_jax.sae_dir import load_sae
    from torch_bridge.models import load_masked_lm

    pairs = read_pairs(pairs_path, cfg.min_valid_f1, cfg.max_concepts)
    saved, stats = load_sae(sae_dir), sae_stats(sae_dir)
    if saved.meta.get("layer") not in (None, layer):
        raise InputError(f"{sae_dir}: an SAE of layer {saved.meta['layer']}, not of layer {layer}")
    bad = [p.feature for p in pairs if not 0 <= p.feature < saved.n_features]
    if bad:
        raise InputError(f"{pairs_path}: feature(s) {bad[:3]} are outside the SAE {sae_dir} "
                         f"({saved.n_features} features): the pairs of another SAE?")
    sites = concept_sites(ConceptLabels.load(labels_path), EvalSet.load(evalset_path),
                          [p.concept for p in pairs], cfg.max_proteins)
    lm, tokenizer = lm_tokenizer or load_masked_lm(model, device)
    sae = TorchSAE.from_saved(saved).to(device)
    rows, notes = causal_rows(lm, tokenizer, sae, stats, layer, pairs, sites, cfg, model_name,
                              str(saved.meta.get("id") or Path(str(sae_dir)).name), device)
    write_causal(out, rows)
    return rows, notes
