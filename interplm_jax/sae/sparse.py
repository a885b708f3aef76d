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

ReLU and JumpReLU steps, whose tokens hold a spread of active counts, list the batch's active
entries instead, as one flat (token, feature) list of a fixed capacity (:class:`Entries`,
:func:`compact`; the same four gathers and scatter-adds over its N entries: ``gather_product``,
``decode_entries``). A step whose batch holds more takes the dense path (the train step decides
for the whole grid at once, see ``interplm_jax.train.step``), with the encoder product computed
once outside the loss and its gradients attached by :func:`with_product_grad`.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

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


class Entries(NamedTuple):
    """A batch's active (token, feature) entries as one flat list of a fixed capacity N.

    Taken in token order (``rows`` sorted); slots past the batch's count are padding, with row B
    and feature F (out of range: gathers from them read 0, scatter-adds drop them)."""

    rows: Array
    """(N,) int32 token of each entry, nondecreasing; B in the padding slots."""
    cols: Array
    """(N,) int32 feature of each entry; F in the padding slots."""
    valid: Array
    """(N,) bool: a real entry (not padding)."""


def compact(mask: Array, capacity: int) -> tuple[Entries, Array]:
    """The true entries of ``mask`` (B, F) as :class:`Entries` of ``capacity`` slots, and
    overflow (() bool: more than ``capacity`` entries; the list then holds the first ones).

    Reads the (B, F) mask once, packing it into 32-bit words (bit j of word w of a row is
    feature j W + w, W = ceil(F / 32)); the rest works on the (B, W) words and the N slots: a
    cumulative sum of the words' popcounts gives each word's first slot, a scatter-max of the
    word indices and a cumulative max give each slot's word, and a 5-step binary search over
    popcounts of the word's low bits gives its bit. (jnp.nonzero, a scatter of all B F entries,
    measured ~20x slower on the CPU; a per-row ``top_k`` must hold the fullest row.)
    """
    B, F = mask.shape
    W = -(-F // 32)
    mask = jnp.pad(mask, ((0, 0), (0, 32 * W - F))).reshape(B, 32, W)
    shifts = jnp.arange(32, dtype=jnp.uint32)[:, None]
    words = jnp.sum(mask.astype(jnp.uint32) << shifts, axis=1, dtype=jnp.uint32).reshape(-1)
    counts = jax.lax.population_count(words).astype(jnp.int32)
    ends = jnp.cumsum(counts)
    starts = ends - counts
    # each slot's word: the last word starting at or before it (empty words share the start
    # of the next nonempty one, and the max picks that one)
    first = jnp.zeros((capacity,), jnp.int32).at[starts].max(
        jnp.arange(B * W, dtype=jnp.int32), mode="drop")
    word = jax.lax.cummax(first)
    rank = jnp.arange(capacity, dtype=jnp.int32) - starts[word]
    bits = words[word]
    pos = jnp.zeros((capacity,), jnp.uint32)  # the largest p with at most rank bits below it
    for step in (16, 8, 4, 2, 1):
        below = jax.lax.population_count(bits & ((jnp.uint32(1) << (pos + step)) - 1))
        pos = jnp.where(below.astype(jnp.int32) <= rank, pos + step, pos)
    valid = jnp.arange(capacity) < ends[-1]
    rows = jnp.where(valid, word // W, B)
    cols = jnp.where(valid, pos.astype(jnp.int32) * W + word % W, F)
    return Entries(rows, cols, valid), ends[-1] > capacity


#: Default capacity of a ReLU/JumpReLU step's sparse branch, active entries per token at F =
#: 10,240 (scaled with F): up to about this mean L0 the sparse step measured faster than the
#: dense one on the CPU (docs/training.md, ``benchmarks/sparse_relu.py``).
AUTO_PER_TOKEN = 64
#: ``decoder: auto`` compiles a ReLU/JumpReLU step's sparse branch from this F on (below, the
#: dense products are cheap and the second branch only doubles the compile time).
AUTO_MIN_F = 4096


def step_capacity(decoder: str, capacity: int, F: int, batch: int) -> int:
    """Slots of a ReLU/JumpReLU step's sparse branch (the batch's list); 0: dense steps only.

    ``capacity``: the config's active entries per token (0: :data:`AUTO_PER_TOKEN` x F / 10,240,
    at least 1). ``sparse`` compiles the sparse branch, ``auto`` too from F = :data:`AUTO_MIN_F`
    on; a step whose batch holds more entries than the slots runs dense."""
    if decoder not in ("auto", "dense", "sparse"):
        raise ValueError(f"decoder must be auto, dense or sparse; got {decoder!r}")
    if decoder == "dense" or (decoder == "auto" and F < AUTO_MIN_F):
        return 0
    per_token = capacity or max(AUTO_PER_TOKEN * F // 10_240, 1)
    return batch * min(per_token, F)


def take_rows(a: Array, idx: Array) -> Array:
    """a[idx] along the first axis, zeros for out-of-range indices (padding). (n, ...)"""
    return a.at[idx].get(mode="fill", fill_value=0)


@jax.custom_vjp
def gather_product(x: Array, b_pre: Array, W_enc: Array, pre: Array, e: Entries) -> Array:
    """pre[rows, cols] (0 in the padding) with gradients sent to (x, b_pre, W_enc) by
    scatter-adds. ``pre`` must equal (x - b_pre) W_enc (computed once, densely, without
    gradient); its own cotangent is zero. x: (B, d); W_enc: (d, F); pre: (B, F) -> (N,)."""
    return pre.at[e.rows, e.cols].get(mode="fill", fill_value=0)


def _gather_product_fwd(x, b_pre, W_enc, pre, e):
    return gather_product(x, b_pre, W_enc, pre, e), (x - b_pre, W_enc, pre.shape, e)


def _gather_product_bwd(res, dv):
    xc, W_enc, pre_shape, e = res
    F = W_enc.shape[-1]
    # dW_enc^T rows: over the entries of feature i, dv xc_row
    dW_enc = jax.ops.segment_sum(dv[:, None] * take_rows(xc, e.rows), e.cols, num_segments=F).T
    dx = jax.ops.segment_sum(dv[:, None] * take_rows(W_enc.T, e.cols), e.rows,
                             num_segments=xc.shape[0], indices_are_sorted=True)
    # summed over the rows, dx is W_enc (per-feature sums of dv): cheaper for b_pre
    db_pre = -(W_enc @ jax.ops.segment_sum(dv, e.cols, num_segments=F))
    return dx, db_pre, dW_enc, jnp.zeros(pre_shape, dv.dtype), None


gather_product.defvjp(_gather_product_fwd, _gather_product_bwd)


#: Slots per token up to which :func:`decode_entries` gathers dv instead of a dense product.
DV_GATHER_MAX = 40


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def decode_entries(W_dec: Array, e: Entries, v: Array, B: int) -> Array:
    """Row b: the sum over its entries of v W_dec[col]. (F, d), (N,) -> (B, d) (no bias)."""
    return jax.ops.segment_sum(v[:, None] * take_rows(W_dec, e.cols), e.rows, num_segments=B,
                               indices_are_sorted=True)


def _decode_entries_fwd(W_dec, e, v, B):
    return decode_entries(W_dec, e, v, B), (W_dec, e, v)


def _decode_entries_bwd(B, res, dy):
    W_dec, e, v = res
    # dv = <dy_row, W_dec[col]>: by gathering both rows of every entry, or, beyond
    # DV_GATHER_MAX slots per token, one dense (B, d) x (d, F) product read at the entries
    # (cheaper there on the CPU: benchmarks/sparse_relu.py --parts)
    if e.rows.shape[0] <= DV_GATHER_MAX * B:
        dv = jnp.sum(take_rows(dy, e.rows) * take_rows(W_dec, e.cols), axis=-1)
    else:
        dv = (dy @ W_dec.T).at[e.rows, e.cols].get(mode="fill", fill_value=0)
    dW = jax.ops.segment_sum(v[:, None] * take_rows(dy, e.rows), e.cols,
                             num_segments=W_dec.shape[0])
    return dW, None, dv


decode_entries.defvjp(_decode_entries_fwd, _decode_entries_bwd)


def entry_counts(e: Entries, on: Array, F: int) -> Array:
    """(F,) float32: how many entries of each feature have ``on`` (N,) true."""
    return jax.ops.segment_sum(on.astype(jnp.float32), e.cols, num_segments=F)


def densify_entries(e: Entries, v: Array, B: int, F: int) -> Array:
    """(B, F) array with v at the entries (zeros elsewhere)."""
    return jnp.zeros((B, F), v.dtype).at[e.rows, e.cols].set(v, mode="drop")


@jax.custom_vjp
def with_product_grad(x: Array, b_pre: Array, W_enc: Array, pre: Array) -> Array:
    """``pre`` (which must equal (x - b_pre) W_enc, computed without gradient) with the
    gradients of that product: the dense counterpart of :func:`gather_product`. -> (B, F)."""
    return pre


def _with_product_grad_fwd(x, b_pre, W_enc, pre):
    return pre, (x - b_pre, W_enc)


def _with_product_grad_bwd(res, dpre):
    xc, W_enc = res
    return dpre @ W_enc.T, -(W_enc @ jnp.sum(dpre, axis=0)), xc.T @ dpre, jnp.zeros_like(dpre)


with_product_grad.defvjp(_with_product_grad_fwd, _with_product_grad_bwd)
