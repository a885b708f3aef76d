"""The decoder-norm constraint as optax transforms, and the optimizer of each architecture.

The reference keeps every decoder row (a dictionary element) at unit norm: before Adam it
removes the gradient component parallel to each row, after Adam it renormalises the rows. Here
both are ``GradientTransformation``s composed with ``optax.chain``.
"""

from __future__ import annotations

import jax
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


def _row_sums(*arrays):
    """Sums over the last axis of several same-shaped arrays, in one variadic reduction (one pass
    over the rows instead of one per array). (..., d) each -> (..., 1) each."""
    zeros = tuple(jnp.zeros((), a.dtype) for a in arrays)
    sums = jax.lax.reduce(arrays, zeros, lambda a, b: tuple(x + y for x, y in zip(a, b)),
                          (arrays[0].ndim - 1,))
    return tuple(s[..., None] for s in sums)


def fused_sae_optimizer(
    arch: Architecture,
    lr,
    lr_schedule: optax.Schedule,
    grad_clip: float | None = 1.0,
    key: str = DECODER,
) -> optax.GradientTransformation:
    """:func:`sae_optimizer`'s chain as one transform whose update is one expression per leaf.

    Same state (``chain.init``: the chain's tuple of states, optax's ``ScaleByAdamState`` and
    ``ScaleByScheduleState`` in it, so checkpoints are interchangeable) and the same formulas,
    written so that XLA needs few passes over each (F, d) leaf: one global sum of squares (the
    clip), one row reduction of the decoder (g . W, W . W), the Adam/learning-rate/step
    expression with the row norms of W + u, and the renormalisation. The projection is applied
    as g - (g . W) W / (||W|| + eps)^2, the clip as one scalar factor; they equal the chain's
    ``g - (g . u) u`` with u = W / (||W|| + eps) and its select up to float rounding (the chain
    stays the reference; tests compare the two).
    """
    chain = sae_optimizer(arch, lr, lr_schedule, grad_clip)
    b1, b2, eps = arch.adam_b1, 0.999, 1e-8

    def clip_factor(tree):
        if not grad_clip:
            return None
        norm = optax.tree.norm(tree)
        return jnp.where(norm < grad_clip, 1.0, grad_clip / norm)

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("fused_sae_optimizer needs params")
        adam: optax.ScaleByAdamState = state[2]
        sched: optax.ScaleByScheduleState = state[3]
        w = params[key]
        g = dict(updates)
        wg, ww = _row_sums(g[key] * w, w * w)
        n = jnp.sqrt(ww) + arch.project_eps
        coef = wg / (n * n)   # the decoder gradient's component along each row, over ||W||+eps
        projected = g[key] - coef * w
        # ReLU clips the raw gradient, the others the projected one (projection is linear)
        c = clip_factor(g if arch.clip_first else {**g, key: projected})
        g[key] = projected
        count = optax.safe_increment(adam.count)
        bc1 = 1 - b1 ** count
        bc2 = 1 - b2 ** count
        step_size = -(lr * lr_schedule(sched.count))
        mu, nu, out = {}, {}, {}
        for name, v in g.items():
            if c is not None:
                v = v * c
            mu[name] = (1 - b1) * v + b1 * adam.mu[name]
            nu[name] = (1 - b2) * (v * v) + b2 * adam.nu[name]
            out[name] = step_size * ((mu[name] / bc1) / (jnp.sqrt(nu[name] / bc2) + eps))
        moved = w + out[key]
        (mm,) = _row_sums(moved * moved)
        out[key] = moved / (jnp.sqrt(mm) + arch.renorm_eps) - w
        new_state = (state[0], state[1],
                     optax.ScaleByAdamState(count=count, mu=mu, nu=nu),
                     optax.ScaleByScheduleState(count=optax.safe_increment(sched.count)),
                     state[4])
        return out, new_state

    return optax.GradientTransformation(chain.init, update)


def sae_optimizer(
    arch: Architecture,
    lr,
    lr_schedule: optax.Schedule,
    grad_clip: float | None = 1.0,
) -> optax.GradientTransformation:
    """The reference trainer's update for ``arch``, as one optax chain.

    ReLU: clip(global norm) -> project decoder gradient -> Adam -> lr -> renormalise decoder.
    TopK, BatchTopK, JumpReLU: project -> clip -> Adam -> lr -> renormalise.
    Adam as torch's defaults (b2 0.999, eps 1e-8; b1 0.9, JumpReLU 0.0). ``lr`` may be a traced
    scalar (one per SAE of a vmapped grid); the step size at count s is lr * lr_schedule(s).
    """
    clip = optax.clip_by_global_norm(grad_clip) if grad_clip else optax.identity()
    project = project_decoder_gradient(arch.project_eps)
    head = (clip, project) if arch.clip_first else (project, clip)
    return optax.chain(
        *head,
        optax.scale_by_adam(b1=arch.adam_b1, b2=0.999, eps=1e-8),
        optax.scale_by_learning_rate(lambda count: lr * lr_schedule(count)),
        renormalize_decoder(arch.renorm_eps),
    )
