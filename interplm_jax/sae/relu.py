"""ReLU SAE (Bricken et al. 2023) as InterPLM's ``ReLUSAE`` and ``ReLUTrainer`` define it.

Parameters of one SAE (DESIGN.md section 2)::

    b_pre (d,)  W_enc (d, F)  b_enc (F,)  W_dec (F, d) unit-norm rows  scale (F,)

encode: f = ReLU((x - b_pre) W_enc + b_enc) * scale;  decode: x_hat = f W_dec + b_pre.
Training loss: mean_b ||x_b - x_hat_b||_2 + l1 * warmup(step) * mean_b ||f_b||_1 (the L2
*norm*, not its square, as the reference).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array

from interplm_jax.sae._common import matmul, torch_linear_uniform, unit_rows
from interplm_jax.sae._types import LossAux, LossOutput, Params, StepContext, nonzero_counts

NAME = "relu"
TRAINABLE = ("b_pre", "W_enc", "b_enc", "W_dec")
HPARAMS = ("l1",)


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
    return matmul(x - params["b_pre"], params["W_enc"], dtype) + params["b_enc"]


def encode(params: Params, x: Array) -> Array:
    """Features f = ReLU(pre) * scale. x: (B, d) -> (B, F)."""
    return jax.nn.relu(pre_activations(params, x)) * params["scale"]


def decode(params: Params, f: Array, dtype=None) -> Array:
    """x_hat = f W_dec + b_pre. f: (B, F) -> (B, d)."""
    return matmul(f, params["W_dec"], dtype) + params["b_pre"]


def loss(params: Params, x: Array, hp: dict[str, Array], ctx: StepContext) -> LossOutput:
    """Training loss of one SAE on a batch x: (B, d); hp["l1"] is the L1 coefficient."""
    f = jax.nn.relu(pre_activations(params, x, ctx.matmul_dtype))
    x_hat = decode(params, f, ctx.matmul_dtype)
    recon = jnp.mean(jnp.linalg.norm(x - x_hat, axis=-1))
    l1 = jnp.sum(f) / x.shape[0]  # f >= 0: mean_b ||f_b||_1 in one reduction
    l1_coef = hp["l1"] * ctx.sparsity_scale
    total = recon + l1_coef * l1
    return total, LossAux(x_hat, f, nonzero_counts(f), {"recon": recon, "l1": l1, "l1_coef": l1_coef})
