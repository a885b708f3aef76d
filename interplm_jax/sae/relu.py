"""ReLU SAE (Bricken et al. 2023) as InterPLM's ``ReLUSAE`` and ``ReLUTrainer`` define it.

Parameters of one SAE (DESIGN.md section 2)::

    b_pre (d,)  W_enc (d, F)  b_enc (F,)  W_dec (F, d) unit-norm rows  scale (F,)

encode: f = ReLU((x - b_pre) W_enc + b_enc) * scale;  decode: x_hat = f W_dec + b_pre.
Training loss: mean_b ||x_b - x_hat_b||_2 + l1 * warmup(step) * mean_b ||f_b||_1 (the L2
*norm*, not its square, as the reference).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import Array

from interplm_jax.sae import sparse
from interplm_jax.sae._common import matmul, torch_linear_uniform, unit_rows
from interplm_jax.sae._spec import (
    INTERPLM_COMMON, SAELENS_COMMON, Architecture, HParam, InterPLM, Optimizer, SAELens, TorchLeaf,
)
from interplm_jax.sae._types import LossAux, LossOutput, Params, StepContext, nonzero_counts

TRAINABLE = ("b_pre", "W_enc", "b_enc", "W_dec")


def init(key: Array, d: int, F: int) -> Params:
    """Initialise as the reference: b_pre = 0, b_enc = 0, W_enc as torch's ``nn.Linear(d, F)``
    default (U(+-1/sqrt(d))), W_dec rows standard normal scaled to unit norm."""
    k_enc, k_dec = jax.random.split(key)
    return {
        "b_pre": jnp.zeros((d,), jnp.float32),
        "W_enc": torch_linear_uniform(k_enc, d, (F, d)).T,
        "b_enc": jnp.zeros((F,), jnp.float32),
        "W_dec": unit_rows(jax.random.normal(k_dec, (F, d), jnp.float32)),
        "scale": jnp.ones((F,), jnp.float32),
    }


def pre_activations(params: Params, x: Array, dtype=None) -> Array:
    """(x - b_pre) W_enc + b_enc. x: (B, d) -> (B, F)."""
    return encoder_product(params, x, dtype) + params["b_enc"]


def encode(params: Params, x: Array) -> Array:
    """Features f = ReLU(pre) * scale. x: (B, d) -> (B, F)."""
    return jax.nn.relu(pre_activations(params, x)) * params["scale"]


def decode(params: Params, f: Array, dtype=None) -> Array:
    """x_hat = f W_dec + b_pre. f: (B, F) -> (B, d)."""
    return matmul(f, params["W_dec"], dtype) + params["b_pre"]


def encoder_product(params: Params, x: Array, dtype=None) -> Array:
    """(x - b_pre) W_enc, the pre-activations without b_enc. x: (B, d) -> (B, F)."""
    return matmul(x - params["b_pre"], params["W_enc"], dtype)


def active_mask(params: Params, product: Array, hp: dict[str, Array]) -> Array:
    """(B, F) bool: the active entries (pre > 0) from :func:`encoder_product`'s ``product``."""
    return product + params["b_enc"] > 0


def loss(params: Params, x: Array, hp: dict[str, Array], ctx: StepContext) -> LossOutput:
    """Training loss of one SAE on a batch x: (B, d); hp["l1"] is the L1 coefficient.

    Dense: value and gradients come from :func:`_loss_parts`, whose backward pass is written out
    (the five matmuls of a step and three passes over (B, F) arrays); tests check it against
    autodiff of :func:`reference_loss` and against a NumPy forward/backward. With
    ``ctx.active`` (the batch's active entries) the decoder and the gradients work on those
    entries only (:func:`_loss_sparse`, the same numbers).
    """
    l1_coef = hp["l1"] * ctx.sparsity_scale
    if ctx.active is not None:
        return _loss_sparse(params, x, l1_coef, ctx)
    total, recon, l1, x_hat, f, counts = _loss_parts(
        params["b_pre"], params["W_enc"], params["b_enc"], params["W_dec"], x, l1_coef, ctx.pre,
        ctx.matmul_dtype)
    return total, LossAux(x_hat, f, counts, {"recon": recon, "l1": l1, "l1_coef": l1_coef})


def _loss_sparse(params: Params, x: Array, l1_coef: Array, ctx: StepContext) -> LossOutput:
    """The loss from the batch's active entries ``ctx.active`` (:class:`sparse.Entries`), which
    must hold every entry with pre > 0 (0 in the padding slots, so ReLU makes them 0)."""
    e, (B, F) = ctx.active, ctx.pre.shape
    pre = sparse.gather_product(x, params["b_pre"], params["W_enc"], ctx.pre, e)
    f = jax.nn.relu(pre + sparse.take_rows(params["b_enc"], e.cols))   # (N,)
    x_hat = sparse.decode_entries(params["W_dec"], e, f, B) + params["b_pre"]
    err = x - x_hat
    recon = jnp.mean(jnp.sqrt(jnp.sum(err * err, axis=-1)))
    l1 = jnp.sum(f) / B
    total = recon + l1_coef * l1
    counts = sparse.entry_counts(e, f > 0, F)
    dense_f = sparse.densify_entries(e, f, B, F)  # dead code unless a caller reads aux.f
    return total, LossAux(x_hat, dense_f, counts, {"recon": recon, "l1": l1, "l1_coef": l1_coef})


def reference_loss(params: Params, x: Array, hp: dict[str, Array], ctx: StepContext) -> LossOutput:
    """The same loss written plainly, differentiated by autodiff (the check of :func:`loss`)."""
    f = jax.nn.relu(pre_activations(params, x, ctx.matmul_dtype))
    x_hat = decode(params, f, ctx.matmul_dtype)
    recon = jnp.mean(jnp.linalg.norm(x - x_hat, axis=-1))
    l1 = jnp.sum(f) / x.shape[0]  # f >= 0: mean_b ||f_b||_1 in one reduction
    l1_coef = hp["l1"] * ctx.sparsity_scale
    total = recon + l1_coef * l1
    return total, LossAux(x_hat, f, nonzero_counts(f), {"recon": recon, "l1": l1, "l1_coef": l1_coef})


def _forward(b_pre, W_enc, b_enc, W_dec, x, l1_coef, pre, dtype):
    xc = x - b_pre
    f = jax.nn.relu((matmul(xc, W_enc, dtype) if pre is None else pre) + b_enc)
    x_hat = matmul(f, W_dec, dtype) + b_pre
    e = x - x_hat
    norms = jnp.sqrt(jnp.sum(e * e, axis=-1))
    recon = jnp.mean(norms)
    # per-feature nonzero counts and sums of f: two plain reductions over the materialised f.
    # (One variadic reduction of both was 5x slower on XLA:CPU: it is emitted as a scalar
    # loop, while these two become vectorised reductions, 11 and 16 ms at 2,048 x 10,240.)
    counts = jnp.sum(jnp.sign(f), axis=0)
    l1 = jnp.sum(jnp.sum(f, axis=0)) / x.shape[0]
    total = recon + l1_coef * l1
    return (total, recon, l1, x_hat, f, counts), (xc, f, e, norms)


@functools.partial(jax.custom_vjp, nondiff_argnums=(7,))
def _loss_parts(b_pre, W_enc, b_enc, W_dec, x, l1_coef, pre=None, dtype=None):
    """(total, recon, l1, x_hat, f, counts); only ``total`` is differentiated (w.r.t. the
    four parameters). ``pre``: the encoder product (x - b_pre) W_enc when the step computed it
    (else None)."""
    return _forward(b_pre, W_enc, b_enc, W_dec, x, l1_coef, pre, dtype)[0]


def _loss_parts_fwd(b_pre, W_enc, b_enc, W_dec, x, l1_coef, pre, dtype):
    out, (xc, f, e, norms) = _forward(b_pre, W_enc, b_enc, W_dec, x, l1_coef, pre, dtype)
    return out, (xc, f, e, norms, W_enc, W_dec, l1_coef, None if pre is None else ())


def _loss_parts_bwd(dtype, res, cotangents):
    xc, f, e, norms, W_enc, W_dec, l1_coef, pre_given = res
    g = cotangents[0]  # the other outputs are metrics, never differentiated
    B = xc.shape[0]
    r = e * (-g / B / norms)[:, None]                    # dL/dx_hat (B, d)
    dW_dec = matmul(r.T, f, dtype).T                     # (F, d), as (f^T r) = (r^T f)^T
    df = matmul(r, W_dec.T, dtype) + g * l1_coef / B     # dL/df (B, F)
    dpre = jnp.where(f > 0, df, 0.0)                     # through the ReLU
    db_enc = jnp.sum(dpre, axis=0)
    # (d, F). xc^T is materialised (a (d, B) copy) behind a barrier: left to itself, XLA:CPU
    # folds the transpose into a batched dot contracting the lhs rows, ~30% slower (vmapped).
    dW_enc = matmul(jax.lax.optimization_barrier(xc.T), dpre, dtype)
    db_pre = jnp.sum(r, axis=0) - W_enc @ db_enc         # through x_hat and through x - b_pre
    dpre_given = None if pre_given is None else jnp.zeros_like(f)  # (no leaves: a static flag)
    return db_pre, dW_enc, db_enc, dW_dec, jnp.zeros_like(xc), jnp.zeros_like(l1_coef), dpre_given


_loss_parts.defvjp(_loss_parts_fwd, _loss_parts_bwd)


SPEC = Architecture(
    name="relu",
    title="ReLU SAE",
    init=init,
    encode=encode,
    decode=decode,
    loss=loss,
    trainable=TRAINABLE,
    hyper=(HParam("l1", 0.1, "L1 penalty coefficient (after its warmup).", minimum=0.0),),
    # the reference's ConstrainedAdam: clip, then project with exact unit rows
    optimizer=Optimizer(project_eps=0.0, renorm_eps=0.0, clip_first=True),
    resamples=True,
    interplm=InterPLM({**INTERPLM_COMMON, "b_pre": TorchLeaf("bias")}, "ReLUTrainer",
                      (("l1_penalty", "l1", None),)),
    saelens=SAELens("standard", {**SAELENS_COMMON, "b_pre": TorchLeaf("b_dec")}),
    sparse_decoder=True,
    encoder_product=encoder_product,
    active_mask=active_mask,
)
