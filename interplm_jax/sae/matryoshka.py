"""Matryoshka BatchTopK SAE (Bussmann et al. 2025; Nabeshima 2024): nested dictionaries.

Leaves, initialisation, encoder, the BatchTopK choice of features, AuxK, the inference
threshold and the decoder are BatchTopK's (:mod:`interplm_jax.sae.topk`); the difference is the
reconstruction loss. The dictionary's first m_1 < m_2 < ... < m_n = F features are nested
dictionaries, m_j = F / 2^(n - j) (at least 1), and each prefix must reconstruct the input on
its own::

    x_hat_j = f[:, :m_j] W_dec[:m_j] + b_pre          (f: the BatchTopK features, (B, F))
    loss    = (1/n) sum_j mean_b ||x_b - x_hat_j,b||^2 + auxk_alpha * AuxK(x - x_hat_n)

so early features learn the general directions and later ones refine them (less feature
absorption). ``prefixes`` (n, per SAE, 1 to 8) is a hyperparameter of the grid; n = 1 is
BatchTopK. The step decodes the F / 2^7 ... F boundaries of :data:`MAX_PREFIXES` chunks once
(one decoder product in all) and weighs the last n.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax import Array

from interplm_jax.sae import batchtopk, topk
from interplm_jax.sae._common import matmul
from interplm_jax.sae._spec import HParam
from interplm_jax.sae._types import LossAux, LossOutput, Params, StepContext, nonzero_counts

MAX_PREFIXES = 8
PREFIXES = HParam("prefixes", 4, "Nested dictionaries n: prefixes of F/2^(n-1), ..., F/2, F "
                  "features each reconstruct the input.", integer=True, minimum=1,
                  maximum=MAX_PREFIXES)


def prefix_sizes(F: int, n: int = MAX_PREFIXES) -> tuple[int, ...]:
    """(m_1, ..., m_n): F / 2^(n - j) features each (floor, at least 1), increasing to F."""
    return tuple(max(F >> (n - j), 1) for j in range(1, n + 1))


def prefix_losses(params: Params, f: Array, x: Array, dtype=None) -> tuple[Array, Array]:
    """(mean_b ||x - x_hat_j||^2 for the :data:`MAX_PREFIXES` prefixes (MAX_PREFIXES,), the
    whole dictionary's x_hat (B, d)). f: (B, F); x: (B, d)."""
    F = f.shape[-1]
    x_hat, start, losses = params["b_pre"] + jnp.zeros_like(x), 0, []
    for end in prefix_sizes(F):
        if end > start:
            x_hat = x_hat + matmul(f[:, start:end], params["W_dec"][start:end], dtype)
        losses.append(jnp.mean(jnp.sum((x - x_hat) ** 2, axis=-1)))
        start = end
    return jnp.stack(losses), x_hat


def loss(params: Params, x: Array, hp: dict[str, Array], ctx: StepContext) -> LossOutput:
    """Matryoshka BatchTopK training loss on a batch x: (B, d)."""
    acts = topk.post_relu(params, x, ctx.matmul_dtype)
    f = topk.batch_topk_mask(acts, hp["k"], ctx.k_max)
    losses, x_hat = prefix_losses(params, f, x, ctx.matmul_dtype)
    n = hp["prefixes"]
    weights = (jnp.arange(MAX_PREFIXES) >= MAX_PREFIXES - n) / n
    recon = jnp.sum(weights * losses)
    counts = nonzero_counts(f)
    aux = topk.auxk_loss(params, jax.lax.stop_gradient(x - x_hat), acts, ctx.dead & (counts == 0))
    total = recon + hp["auxk_alpha"] * aux
    parts = {"recon": recon, "recon_full": losses[-1],
             "recon_first": jnp.take(losses, MAX_PREFIXES - n), "auxk": aux}
    return total, LossAux(x_hat, f, counts, parts)


# BatchTopK but for the loss (nested prefixes) and its hyperparameter. InterPLM's reference has no
# Matryoshka SAE (no InterPLM format); SAELens runs it as it runs BatchTopK (the nesting is a
# training matter): its jumprelu with the scalar threshold broadcast.
SPEC = dataclasses.replace(batchtopk.SPEC, name="matryoshka", title="Matryoshka BatchTopK SAE",
                           loss=loss, hyper=topk.HYPER + (PREFIXES,), interplm=None)
