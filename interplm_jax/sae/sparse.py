"""Sparse (indices, values) encode/decode pieces, with gather/scatter backward passes.

A TopK SAE uses only k of its F features per token, and a trained ReLU/JumpReLU SAE a few tens
to hundreds, so the decoder and every backward matmul can work on the K active rows instead of
all F::

    x_hat_b = sum_j v_bj W_dec[i_bj] + b_pre                     B k d   (dense: B F d)
    dv_bj   = <dx_hat_b, W_dec[i_bj]>                            B k d
    dW_dec  = scatter-add over (b, j) of v_bj dx_hat_b into row i_bj   B k d
    dW_enc[:, i] = scatter-add of dpre_bj (x_b - b_pre) into column i_bj  B k d

Only the encoder's forward matmul (all F pre-activations, to pick the top k) stays dense.
i: (B, K) int32 feature indices, v: (B, K) values (zeros pad rows with fewer than K features).

ReLU and JumpReLU steps compact each row's active entries into a fixed capacity K with
:func:`compact`; a step where some row holds more takes the dense path (the train step decides
for the whole grid at once, see ``interplm_jax.train.step``), with the encoder product computed
once outside the loss and its gradients attached by :func:`with_encoder_grad`.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import Array


@jax.custom_vjp
def gather_pre(x: Array, b_pre: Array, W_enc: Array, b_enc: Array, pre: Array, idx: Array) -> Array:
    """pre[b, idx[b, j]] with gradients sent to (x, b_pre, W_enc, b_enc) by scatter-adds.

    ``pre`` must equal (x - b_pre) W_enc + b_enc (computed once, densely, without gradient);
    its own cotangent is zero. x: (B, d); W_enc: (d, F); pre: (B, F); idx: (B, K) -> (B, K).
    """
    return jnp.take_along_axis(pre, idx, axis=-1)


def _gather_pre_fwd(x, b_pre, W_enc, b_enc, pre, idx):
    return jnp.take_along_axis(pre, idx, axis=-1), (x, b_pre, W_enc, b_enc.shape[0], pre, idx)


def _gather_pre_bwd(res, dv):
    x, b_pre, W_enc, F, pre, idx = res
    xc = x - b_pre
    flat = idx.reshape(-1)
    db_enc = jax.ops.segment_sum(dv.reshape(-1), flat, num_segments=F)
    # dW_enc^T rows: sum over the (b, j) that chose feature i of dv_bj * xc_b
    upd = (dv[:, :, None] * xc[:, None, :]).reshape(-1, xc.shape[-1])
    dW_enc = jax.ops.segment_sum(upd, flat, num_segments=F).T
    # d/dxc = sum_j dv_bj W_enc[:, i_bj]; summed over b it is W_enc db_enc (cheaper for b_pre)
    dx = jnp.einsum("bk,bkd->bd", dv, jnp.take(W_enc.T, idx, axis=0))
    db_pre = -(W_enc @ db_enc)
    return dx, db_pre, dW_enc, db_enc, jnp.zeros_like(pre), None


gather_pre.defvjp(_gather_pre_fwd, _gather_pre_bwd)


@jax.custom_vjp
def decode_rows(W_dec: Array, idx: Array, v: Array) -> Array:
    """sum_j v[b, j] W_dec[idx[b, j]]: (F, d), (B, K), (B, K) -> (B, d) (no bias)."""
    return jnp.einsum("bk,bkd->bd", v, jnp.take(W_dec, idx, axis=0))


def _decode_rows_fwd(W_dec, idx, v):
    rows = jnp.take(W_dec, idx, axis=0)
    return jnp.einsum("bk,bkd->bd", v, rows), (rows, idx, v, W_dec.shape[0])


def _decode_rows_bwd(res, dy):
    rows, idx, v, F = res
    dv = jnp.einsum("bd,bkd->bk", dy, rows)
    upd = (v[:, :, None] * dy[:, None, :]).reshape(-1, dy.shape[-1])
    dW = jax.ops.segment_sum(upd, idx.reshape(-1), num_segments=F)
    return dW, None, dv


decode_rows.defvjp(_decode_rows_fwd, _decode_rows_bwd)


def column_counts(idx: Array, on: Array, F: int) -> Array:
    """(F,) float32: how many rows chose each feature with ``on`` true. idx, on: (B, K)."""
    return jax.ops.segment_sum(on.reshape(-1).astype(jnp.float32), idx.reshape(-1), num_segments=F)


def densify(idx: Array, v: Array, F: int) -> Array:
    """(B, F) array with v[b, j] at column idx[b, j] (indices distinct within a row)."""
    B = idx.shape[0]
    return jnp.zeros((B, F), v.dtype).at[jnp.arange(B)[:, None], idx].set(v)


def compact(scores: Array, capacity: int) -> tuple[Array, Array]:
    """Indices of each row's entries with ``scores > -inf``, packed into ``capacity`` slots.

    scores: (B, F), -inf where an entry is inactive. Returns (idx (B, capacity) int32, distinct
    within a row, the active entries first and then inactive ones as padding; overflow () bool:
    some row has more than ``capacity`` active entries, and then idx holds only part of them).
    """
    # (the overflow from a count, not from the (capacity+1)-th of a top_k: XLA:CPU turns a
    # slice of top_k's values into a far slower computation, ~8x the top_k itself)
    overflow = jnp.any(jnp.sum(scores > -jnp.inf, axis=-1) > capacity)
    return jax.lax.top_k(scores, min(capacity, scores.shape[-1]))[1], overflow


def step_capacity(decoder: str, capacity: int, F: int) -> int:
    """Active features per row a ReLU/JumpReLU step's sparse branch holds; 0: dense steps only.

    ``capacity`` is the config's (0: F/32). Only ``decoder: sparse`` compiles the sparse branch:
    ``auto`` stays dense for these architectures, whose rows hold a spread of active counts
    (the capacity must cover the fullest row of the batch), measured slower than dense on the
    CPU (docs/training.md, ``benchmarks/sparse_relu.py``)."""
    if decoder not in ("auto", "dense", "sparse"):
        raise ValueError(f"decoder must be auto, dense or sparse; got {decoder!r}")
    return min(capacity or max(F // 32, 1), F) if decoder == "sparse" else 0


@jax.custom_vjp
def with_encoder_grad(x: Array, b_pre: Array, W_enc: Array, b_enc: Array, pre: Array) -> Array:
    """``pre`` (which must equal (x - b_pre) W_enc + b_enc, computed without gradient) with the
    gradients of that product: the dense counterpart of :func:`gather_pre`. (B, F) -> (B, F)."""
    return pre


def _with_encoder_grad_fwd(x, b_pre, W_enc, b_enc, pre):
    return pre, (x - b_pre, W_enc)


def _with_encoder_grad_bwd(res, dpre):
    xc, W_enc = res
    db_enc = jnp.sum(dpre, axis=0)
    dx = dpre @ W_enc.T
    return dx, -(W_enc @ db_enc), xc.T @ dpre, db_enc, jnp.zeros_like(dpre)


with_encoder_grad.defvjp(_with_encoder_grad_fwd, _with_encoder_grad_bwd)


@partial(jax.jit, static_argnames="k")
def topk_indices(acts: Array, k: int) -> tuple[Array, Array]:
    """(values, indices) of the k largest entries of each row of acts: (B, F) -> (B, k) each."""
    return jax.lax.top_k(acts, k)
