"""JumpReLU SAE (Rajamanoharan et al. 2024) as InterPLM's ``JumpReLUTrainer`` trains it.

Parameters of one SAE (note: a decoder bias ``b_dec`` that is *not* subtracted from the input,
as the reference's ``apply_b_dec_to_input = False``)::

    W_enc (d, F)  b_enc (F,)  W_dec (F, d) unit-norm rows  b_dec (d,)  threshold (F,)  scale (F,)

encode: pre = x W_enc + b_enc; f = pre * [pre > threshold] * scale; decode: x_hat = f W_dec + b_dec.
Training loss: mean_b ||x_b - x_hat_b||^2 + c * (L0 / target_l0 - 1)^2 * warmup(step), where the
L0 and the jump use straight-through estimators with a rectangle kernel of width ``bandwidth``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array

from interplm_jax.sae import sparse
from interplm_jax.sae._common import matmul, torch_kaiming_uniform, unit_rows
from interplm_jax.sae._spec import (
    INTERPLM_COMMON, SAELENS_COMMON, Architecture, HParam, InterPLM, Optimizer, SAELens, TorchLeaf,
)
from interplm_jax.sae._types import LossAux, LossOutput, Params, StepContext, nonzero_counts

TRAINABLE = ("W_enc", "b_enc", "W_dec", "b_dec", "threshold")
BANDWIDTH = HParam("bandwidth", 0.001, "Width of the straight-through rectangle kernel.",
                   minimum=0.0, exclusive=True)
HYPER = (
    HParam("sparsity_penalty", 1.0, "Coefficient c of the L0 penalty.", minimum=0.0),
    HParam("target_l0", 20.0, "The L0 the penalty aims at.", minimum=0.0, exclusive=True),
    BANDWIDTH,
)
HPARAMS = tuple(h.name for h in HYPER)


def init(key: Array, d: int, F: int, threshold: float = 0.001) -> Params:
    """Initialise as the reference: W_dec rows = kaiming-uniform (fan_in F) scaled to unit norm,
    W_enc = W_dec^T, biases 0, threshold 0.001 everywhere."""
    w_dec = unit_rows(torch_kaiming_uniform(key, F, (F, d)))
    return {
        "W_enc": w_dec.T,
        "b_enc": jnp.zeros((F,), jnp.float32),
        "W_dec": w_dec,
        "b_dec": jnp.zeros((d,), jnp.float32),
        "threshold": jnp.full((F,), threshold, jnp.float32),
        "scale": jnp.ones((F,), jnp.float32),
    }


def _rectangle(z: Array) -> Array:
    return ((z > -0.5) & (z < 0.5)).astype(z.dtype)


@jax.custom_vjp
def jump(x: Array, threshold: Array, bandwidth: Array) -> Array:
    """x * [x > threshold]; gradient to threshold by the straight-through rectangle estimator."""
    return x * (x > threshold)


def _jump_fwd(x, threshold, bandwidth):
    return jump(x, threshold, bandwidth), (x, threshold, bandwidth)


def _jump_bwd(res, g):
    x, threshold, bandwidth = res
    x_grad = (x > threshold) * g
    t_grad = -(threshold / bandwidth) * _rectangle((x - threshold) / bandwidth) * g
    return x_grad, _sum_to(t_grad, threshold.shape), jnp.zeros_like(bandwidth)


jump.defvjp(_jump_fwd, _jump_bwd)


@jax.custom_vjp
def step(x: Array, threshold: Array, bandwidth: Array) -> Array:
    """[x > threshold]; zero gradient to x, rectangle estimator to threshold."""
    return (x > threshold).astype(x.dtype)


def _step_fwd(x, threshold, bandwidth):
    return step(x, threshold, bandwidth), (x, threshold, bandwidth)


def _step_bwd(res, g):
    x, threshold, bandwidth = res
    t_grad = -(1.0 / bandwidth) * _rectangle((x - threshold) / bandwidth) * g
    return jnp.zeros_like(x), _sum_to(t_grad, threshold.shape), jnp.zeros_like(bandwidth)


step.defvjp(_step_fwd, _step_bwd)


def _sum_to(g: Array, shape: tuple[int, ...]) -> Array:
    """Sum a broadcast gradient back to ``shape`` (as torch autograd does)."""
    lead = g.ndim - len(shape)
    return g.sum(axis=tuple(range(lead))) if lead else g


def pre_activations(params: Params, x: Array, dtype=None) -> Array:
    """x W_enc + b_enc. x: (B, d) -> (B, F)."""
    return encoder_product(params, x, dtype) + params["b_enc"]


def encode(params: Params, x: Array) -> Array:
    """Features f = ReLU(jump(x W_enc + b_enc)) * scale, as the reference's ``JumpReLUSAE.encode``
    (the ReLU matters only where a threshold is negative). x: (B, d) -> (B, F)."""
    pre = x @ params["W_enc"] + params["b_enc"]
    return jax.nn.relu(pre * (pre > params["threshold"])) * params["scale"]


def decode(params: Params, f: Array, dtype=None) -> Array:
    """x_hat = f W_dec + b_dec. f: (B, F) -> (B, d)."""
    return matmul(f, params["W_dec"], dtype) + params["b_dec"]


def encoder_product(params: Params, x: Array, dtype=None) -> Array:
    """x W_enc, the pre-activations without b_enc. x: (B, d) -> (B, F)."""
    return matmul(x, params["W_enc"], dtype)


def active_mask(params: Params, product: Array, hp: dict[str, Array]) -> Array:
    """(B, F) bool: the entries that take part in the loss or its gradients (pre above the
    threshold, or inside the rectangle window of the threshold's gradient, pre > threshold -
    bandwidth/2), from :func:`encoder_product`'s ``product``. The other entries have f = 0 and
    only the L0 estimator's gradient sees them, through a per-feature count."""
    pre, t = product + params["b_enc"], params["threshold"]
    return (pre > t) | ((pre - t) / hp["bandwidth"] > -0.5)


def loss(params: Params, x: Array, hp: dict[str, Array], ctx: StepContext) -> LossOutput:
    """JumpReLU training loss on a batch x: (B, d). With ``ctx.active`` (the batch's entries of
    :func:`active_mask`) the decoder and gradients use those entries only (same numbers)."""
    bw = hp["bandwidth"]  # a (vmapped) array: an ordinary argument with a zero gradient
    if ctx.active is not None:
        return _loss_sparse(params, x, hp, ctx)
    if ctx.pre is None:
        pre = pre_activations(params, x, ctx.matmul_dtype)
    else:
        pre = sparse.with_product_grad(x, jnp.zeros_like(params["b_dec"]), params["W_enc"],
                                       ctx.pre) + params["b_enc"]
    f = jump(pre, params["threshold"], bw)
    x_hat = decode(params, f, ctx.matmul_dtype)
    l0 = jnp.mean(jnp.sum(step(f, params["threshold"], bw), axis=-1))
    return _total(params, x, x_hat, f, l0, nonzero_counts(f), hp, ctx)


def _loss_sparse(params: Params, x: Array, hp: dict[str, Array], ctx: StepContext) -> LossOutput:
    e, (B, F) = ctx.active, ctx.pre.shape
    t, bw = params["threshold"], hp["bandwidth"]
    pre = sparse.gather_product(x, jnp.zeros_like(params["b_dec"]), params["W_enc"], ctx.pre, e)
    pre = pre + sparse.take_rows(params["b_enc"], e.cols)                  # (N,)
    t_k = sparse.take_rows(t, e.cols)
    f = jnp.where(e.valid, jump(pre, t_k, bw), 0.0)
    x_hat = sparse.decode_entries(params["W_dec"], e, f, B) + params["b_dec"]
    # every entry outside the list has f = 0: its L0 term is step(0, t_i), once per such row
    outside = B - sparse.entry_counts(e, e.valid, F)
    l0_out = jnp.sum(outside * step(jnp.zeros_like(t), t, bw))
    l0 = (jnp.sum(jnp.where(e.valid, step(f, t_k, bw), 0.0)) + l0_out) / B
    counts = sparse.entry_counts(e, f != 0, F)
    return _total(params, x, x_hat, sparse.densify_entries(e, f, B, F), l0, counts, hp, ctx)


def _total(params, x, x_hat, f, l0, counts, hp, ctx: StepContext) -> LossOutput:
    recon = jnp.mean(jnp.sum((x - x_hat) ** 2, axis=-1))
    sparsity = hp["sparsity_penalty"] * (l0 / hp["target_l0"] - 1.0) ** 2 * ctx.sparsity_scale
    total = recon + sparsity
    return total, LossAux(x_hat, f, counts, {"recon": recon, "sparsity": sparsity, "l0_ste": l0})


SPEC = Architecture(
    name="jumprelu",
    title="JumpReLU SAE",
    init=init,
    encode=encode,
    decode=decode,
    loss=loss,
    trainable=TRAINABLE,
    hyper=HYPER,
    optimizer=Optimizer(adam_b1=0.0),
    sparsity_warmup_steps=2000,  # the reference JumpReLU trainer's default
    inference="threshold",
    interplm=InterPLM({**INTERPLM_COMMON, "b_dec": TorchLeaf("decoder.bias"),
                       "threshold": TorchLeaf("threshold")},
                      "JumpReLUTrainer", (("bandwidth", "bandwidth", BANDWIDTH.default),)),
    saelens=SAELens("jumprelu", {**SAELENS_COMMON, "b_dec": TorchLeaf("b_dec"),
                                 "threshold": TorchLeaf("threshold")}),
    sparse_decoder=True,
    encoder_product=encoder_product,
    active_mask=active_mask,
)
