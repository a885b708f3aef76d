"""The decoder-norm constraint as optax transforms, and the optimizer of each architecture.

The reference keeps every decoder row (a dictionary element) at unit norm: before Adam it
removes the gradient component parallel to each row, after Adam it renormalises the rows. Here
both are ``GradientTransformation``s composed with ``optax.chain``.
"""

from __future__ import annotations

import jax.numpy as jnp
import optax

from interplm_jax.sae import Architecture

DECODER = "W_dec"


def project_decoder_gradient(eps: float = 0.0, key: str = DECODER) -> optax.GradientTransformation:
    """g_i <- g_i - (g_i . w_i) w_i for each decoder row, with w_i = W_i / (||W_i|| + eps).

    Updates and params are dicts holding ``key`` (F, d).
    """

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("project_decoder_gradient needs params")
        w = params[key]
        unit = w / (jnp.linalg.norm(w, axis=-1, keepdims=True) + eps)
        g = updates[key]
        g = g - jnp.sum(g * unit, axis=-1, keepdims=True) * unit
        return {**updates, key: g}, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def renormalize_decoder(eps: float = 0.0, key: str = DECODER) -> optax.GradientTransformation:
    """Turn the decoder update u into n(W + u) - W, with n(V)_i = V_i / (||V_i|| + eps).

    Applied last in a chain, ``optax.apply_updates`` then lands on unit-norm decoder rows (up to
    one float rounding of the addition).
    """

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("renormalize_decoder needs params")
        w = params[key]
        moved = w + updates[key]
        target = moved / (jnp.linalg.norm(moved, axis=-1, keepdims=True) + eps)
        return {**updates, key: target - w}, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def sae_optimizer(
    arch: Architecture,
    lr,
    lr_schedule: optax.Schedule,
    grad_clip: float | None = 1.0,
) -> optax.GradientTransformation:
    """The reference trainer's update for ``arch``, as one optax chain.

    ReLU: clip(global norm) -> project decoder gradient -> Adam -> lr -> renormalise decoder.
    TopK, BatchTopK, JumpReLU: project -> clip -> Adam -> lr -> renormalise (the order, eps
    values and Adam's b1 are the architecture's ``optimizer`` settings).
    Adam as torch's defaults (b2 0.999, eps 1e-8; b1 0.9, JumpReLU 0.0). ``lr`` may be a traced
    scalar (one per SAE of a vmapped grid); the step size at count s is lr * lr_schedule(s).
    """
    opt = arch.optimizer
    clip = optax.clip_by_global_norm(grad_clip) if grad_clip else optax.identity()
    project = project_decoder_gradient(opt.project_eps)
    head = (clip, project) if opt.clip_first else (project, clip)
    return optax.chain(
        *head,
        optax.scale_by_adam(b1=opt.adam_b1, b2=0.999, eps=1e-8),
        optax.scale_by_learning_rate(lambda count: lr * lr_schedule(count)),
        renormalize_decoder(opt.renorm_eps),
    )
