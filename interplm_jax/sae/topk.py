"""TopK (Gao et al. 2024) and BatchTopK (Bussmann et al. 2024) SAEs as InterPLM's trainers do them.

Parameters of one SAE::

    b_pre (d,)  W_enc (d, F)  b_enc (F,)  W_dec (F, d) unit-norm rows  scale (F,)
    k ()  int32, features kept per token (TopK) or on average per token (BatchTopK)
    threshold ()  float32, running estimate of the smallest kept activation (-1 until set)

Training: pre = ReLU((x - b_pre) W_enc + b_enc); TopK keeps the k largest entries of each row,
BatchTopK the k*B largest entries of the whole (B, F) batch; x_hat = f W_dec + b_pre;
loss = mean_b ||x_b - x_hat_b||^2 + auxk_alpha * auxk (the AuxK loss on dead features).
Inference: TopK keeps the top k per token; BatchTopK keeps pre > threshold (as the reference's
``BatchTopKSAE.encode`` does by default).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array

from interplm_jax.sae import sparse
from interplm_jax.sae._common import kth_largest, matmul, torch_linear_uniform, unit_rows
from interplm_jax.sae._spec import (
    INTERPLM_COMMON, SAELENS_COMMON, Architecture, HParam, InterPLM, SAELens, TorchLeaf,
)
from interplm_jax.sae._types import LossAux, LossOutput, Params, StepContext, nonzero_counts

TRAINABLE = ("b_pre", "W_enc", "b_enc", "W_dec")
#: TopK's hyperparameters (BatchTopK's too), with the reference trainers' defaults.
K = HParam("k", 10, "Features kept per token (BatchTopK: on average per token).",
           integer=True, minimum=1, maximum="F", init=True)
AUXK_ALPHA = HParam("auxk_alpha", 1 / 32, "Weight of the AuxK loss on dead features.", minimum=0.0)
HYPER = (
    K,
    AUXK_ALPHA,
    HParam("threshold_beta", 0.999, "EMA factor of the inference threshold.",
           minimum=0.0, maximum=1.0),
    HParam("threshold_start_step", 1000, "Step after which the inference threshold is updated.",
           integer=True, minimum=0),
)
HPARAMS = tuple(h.name for h in HYPER)
#: InterPLM's TopKSAE / BatchTopKSAE state dict (b_dec is our b_pre; it is subtracted from x).
INTERPLM_LEAVES = {**INTERPLM_COMMON, "b_pre": TorchLeaf("b_dec"), "k": TorchLeaf("k"),
                   "threshold": TorchLeaf("threshold")}


def init(key: Array, d: int, F: int, k: int = K.default) -> Params:
    """Initialise as the reference: W_dec rows = torch ``nn.Linear(F, d)`` default weights scaled
    to unit norm (norm + float32 eps), W_enc = W_dec^T, biases 0, threshold -1."""
    w = torch_linear_uniform(key, F, (F, d))
    w_dec = unit_rows(w, float(jnp.finfo(jnp.float32).eps))
    return {
        "b_pre": jnp.zeros((d,), jnp.float32),
        "W_enc": w_dec.T,
        "b_enc": jnp.zeros((F,), jnp.float32),
        "W_dec": w_dec,
        "scale": jnp.ones((F,), jnp.float32),
        "k": jnp.asarray(k, jnp.int32),
        "threshold": jnp.asarray(-1.0, jnp.float32),
    }


def post_relu(params: Params, x: Array, dtype=None) -> Array:
    """ReLU((x - b_pre) W_enc + b_enc). x: (B, d) -> (B, F)."""
    return jax.nn.relu(matmul(x - params["b_pre"], params["W_enc"], dtype) + params["b_enc"])


def decode(params: Params, f: Array, dtype=None) -> Array:
    """x_hat = f W_dec + b_pre. f: (B, F) -> (B, d)."""
    return matmul(f, params["W_dec"], dtype) + params["b_pre"]


def topk_mask(acts: Array, k: Array, k_max: int) -> Array:
    """Per row, keep the k largest entries (ties at the k-th value are all kept). (B, F)."""
    kth = jax.lax.stop_gradient(kth_largest(acts, k, k_max))
    return jnp.where(acts >= kth[:, None], acts, 0.0)


def batch_topk_mask(acts: Array, k: Array, k_max: int) -> Array:
    """Keep the k*B largest entries of the whole batch (B, F) (ties at the cut all kept)."""
    B = acts.shape[0]
    kth = jax.lax.stop_gradient(kth_largest(acts.reshape(-1), k * B, k_max * B))
    return jnp.where(acts >= kth, acts, 0.0)


def encode_topk(params: Params, x: Array) -> Array:
    """TopK inference: the top k of each row, times scale. x: (B, d) -> (B, F)."""
    acts = post_relu(params, x)
    k = params["k"]
    kth = -jnp.take(jnp.sort(-acts, axis=-1), k - 1, axis=-1)
    return jnp.where(acts >= kth[:, None], acts, 0.0) * params["scale"]


def encode_topk_sparse(params: Params, x: Array, k: int) -> tuple[Array, Array]:
    """TopK inference as (values, indices), each (B, k): the k largest features of each row,
    times scale, largest first (k static: ``int(params["k"])`` outside jit). Exactly k per row
    (a tie at the k-th value keeps the lower index; the dense :func:`encode_topk` keeps all)."""
    vals, idx = jax.lax.top_k(post_relu(params, x), k)
    return vals * jnp.take(params["scale"], idx), idx


def decode_sparse(params: Params, values: Array, indices: Array) -> Array:
    """x_hat = sum_j values[:, j] W_dec[indices[:, j]] + b_pre: (B, k), (B, k) -> (B, d);
    equal to ``decode(params, f)`` for the f those pairs describe, in B k d instead of B F d."""
    return sparse.decode_rows(params["W_dec"], indices, values) + params["b_pre"]


def encode_batchtopk(params: Params, x: Array) -> Array:
    """BatchTopK inference: pre-activations above the learned threshold, times scale."""
    acts = post_relu(params, x)
    return acts * (acts > params["threshold"]) * params["scale"]


def auxk_loss(params: Params, residual: Array, acts: Array, dead: Array) -> Array:
    """AuxK loss: reconstruct the (detached) residual from the top d//2 dead latents.

    residual: (B, d) = x - x_hat; acts: (B, F) post-ReLU pre-activations; dead: (F,) bool.
    Normalised by the residual's variance; 0 when no feature is dead (as the reference).
    """
    d = residual.shape[-1]
    k_aux = min(d // 2, acts.shape[-1])
    masked = jnp.where(dead[None, :], acts, -jnp.inf)
    kth = jax.lax.stop_gradient(jax.lax.top_k(masked, k_aux)[0][:, -1])
    aux_f = jnp.where(dead[None, :] & (masked >= kth[:, None]), acts, 0.0)
    return _auxk_normalized(residual, aux_f @ params["W_dec"], dead)


def _auxk_normalized(residual: Array, recon: Array, dead: Array) -> Array:
    """||residual - recon||^2 / Var(residual) (batch means); 0 without dead features."""
    l2 = jnp.mean(jnp.sum((residual - recon) ** 2, axis=-1))
    denom = jnp.mean(jnp.sum((residual - residual.mean(axis=0)) ** 2, axis=-1))
    normalized = jnp.nan_to_num(l2 / denom, nan=0.0, posinf=0.0, neginf=0.0)
    return jnp.where(jnp.any(dead), normalized, 0.0)


def use_sparse(decoder: str, k_max: int, F: int) -> bool:
    """Whether a TopK loss decodes sparsely: ``sparse``, or ``auto`` with k_max <= F / 32.

    (On a CPU at 320 -> 10,240, batch 2,048, the two break even at k = F/16 for one SAE and the
    sparse step's advantage shrinks with the grid size; ``benchmarks/topk_decoder.py``.)"""
    if decoder not in ("auto", "dense", "sparse"):
        raise ValueError(f"decoder must be auto, dense or sparse; got {decoder!r}")
    return decoder == "sparse" or (decoder == "auto" and 32 * k_max <= F)


def _loss_sparse(params, x, hp, ctx: StepContext) -> LossOutput:
    """TopK loss with (indices, values) decoding; equal to the dense loss up to float rounding
    (and ties at the k-th value, which the dense mask keeps all of and this keeps k of)."""
    F = params["W_enc"].shape[-1]
    k_max, k_aux = ctx.k_max, min(x.shape[-1] // 2, F)
    pre = jax.lax.stop_gradient(
        matmul(x - params["b_pre"], params["W_enc"], ctx.matmul_dtype) + params["b_enc"])
    acts = jax.nn.relu(pre)
    top, idx = jax.lax.top_k(acts, k_max)  # (B, k_max)
    keep = (jnp.arange(k_max) < hp["k"])[None, :] & (top > 0)
    counts = sparse.column_counts(idx, keep, F)
    dead = ctx.dead & (counts == 0)
    aux_top, aux_idx = jax.lax.top_k(jnp.where(dead[None, :], acts, -jnp.inf), k_aux)
    both = jnp.concatenate([idx, aux_idx], axis=-1)
    v = jax.nn.relu(sparse.gather_pre(x, params["b_pre"], params["W_enc"], params["b_enc"], pre, both))
    v_main = jnp.where(keep, v[:, :k_max], 0.0)
    v_aux = jnp.where(aux_top > -jnp.inf, v[:, k_max:], 0.0)
    x_hat = sparse.decode_rows(params["W_dec"], idx, v_main) + params["b_pre"]
    e = x - x_hat
    recon = jnp.mean(jnp.sum(e**2, axis=-1))
    aux = _auxk_normalized(jax.lax.stop_gradient(e), sparse.decode_rows(params["W_dec"], aux_idx, v_aux), dead)
    total = recon + hp["auxk_alpha"] * aux
    f = sparse.densify(idx, v_main, F)  # dead code unless a caller reads aux.f
    row_min = jnp.min(jnp.where(v_main > 0, v_main, jnp.inf), axis=-1)
    return total, LossAux(x_hat, f, counts, {"recon": recon, "auxk": aux}, row_min)


def _loss(params, x, hp, ctx: StepContext, batch: bool) -> LossOutput:
    if not batch and use_sparse(ctx.decoder, ctx.k_max, params["W_enc"].shape[-1]):
        return _loss_sparse(params, x, hp, ctx)
    acts = post_relu(params, x, ctx.matmul_dtype)
    keep = batch_topk_mask if batch else topk_mask
    f = keep(acts, hp["k"], ctx.k_max)
    x_hat = decode(params, f, ctx.matmul_dtype)
    e = x - x_hat
    recon = jnp.mean(jnp.sum(e**2, axis=-1))
    counts = nonzero_counts(f)
    aux = auxk_loss(params, jax.lax.stop_gradient(e), acts, ctx.dead & (counts == 0))
    total = recon + hp["auxk_alpha"] * aux
    return total, LossAux(x_hat, f, counts, {"recon": recon, "auxk": aux})


def loss_topk(params: Params, x: Array, hp: dict[str, Array], ctx: StepContext) -> LossOutput:
    """TopK training loss on a batch x: (B, d)."""
    return _loss(params, x, hp, ctx, batch=False)


def loss_batchtopk(params: Params, x: Array, hp: dict[str, Array], ctx: StepContext) -> LossOutput:
    """BatchTopK training loss on a batch x: (B, d)."""
    return _loss(params, x, hp, ctx, batch=True)


def _ema_threshold(params: Params, observed: Array, hp, ctx: StepContext) -> Params:
    old = params["threshold"]
    beta = hp["threshold_beta"]
    new = jnp.where(old < 0, observed, beta * old + (1 - beta) * observed)
    new = jnp.where(ctx.step > hp["threshold_start_step"], new, old)
    return {**params, "threshold": new.astype(jnp.float32)}


def update_buffers_topk(params: Params, aux: LossAux, hp, ctx: StepContext) -> Params:
    """Threshold <- EMA of the batch mean of each row's smallest positive kept activation."""
    row_min = aux.row_min
    if row_min is None:
        row_min = jnp.min(jnp.where(aux.f > 0, aux.f, jnp.inf), axis=-1)
    return _ema_threshold(params, jnp.mean(row_min), hp, ctx)


def update_buffers_batchtopk(params: Params, aux: LossAux, hp, ctx: StepContext) -> Params:
    """Threshold <- EMA of the smallest positive kept activation of the batch (0 if none)."""
    smallest = jnp.min(jnp.where(aux.f > 0, aux.f, jnp.inf))
    return _ema_threshold(params, jnp.where(jnp.isfinite(smallest), smallest, 0.0), hp, ctx)


SPEC = Architecture(
    name="topk",
    title="TopK SAE",
    init=init,
    encode=encode_topk,
    decode=decode,
    loss=loss_topk,
    trainable=TRAINABLE,
    hyper=HYPER,
    update_buffers=update_buffers_topk,
    inference="topk",
    # (no auxk_alpha in its config: the reference's load_sae would take it for BatchTopK)
    interplm=InterPLM(INTERPLM_LEAVES, "TopKTrainer", (("k", "k", None), ("lr", "lr", 0.0))),
    # SAELens's topk has no threshold (ours is -1 until the EMA starts) and k in cfg.json
    saelens=SAELens("topk", {**SAELENS_COMMON, "b_pre": TorchLeaf("b_dec"), "k": TorchLeaf("k", "cfg"),
                             "threshold": TorchLeaf(None, default=-1.0)}, foldable=False),
    sparse_decoder=True,
)
