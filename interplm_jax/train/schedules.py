"""Learning-rate and sparsity-penalty schedules as optax schedules (step count -> factor).

Both reproduce the reference trainers (``interplm/train/trainers/common.py``); the update of
0-based step s uses factor(s), as torch's ``LambdaLR`` does.
"""

from __future__ import annotations

import jax.numpy as jnp
import optax


def lr_factor(total_steps: int, warmup_steps: float, decay_start: int | None) -> optax.Schedule:
    """Linear warmup from 0, constant 1, then linear decay to 0.

    factor(s) = s / warmup_steps                         if s < warmup_steps
              = (total - s) / (total - decay_start)      if decay_start <= s (and decay_start < total)
              = 1                                        otherwise.
    ``decay_start=None`` (or >= total) means no decay.
    """
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(f"warmup_steps must be >= 0 and < steps ({total_steps}); got {warmup_steps}")
    decays = decay_start is not None and decay_start < total_steps
    if decays and decay_start <= warmup_steps:
        raise ValueError(f"decay_start ({decay_start}) must be > warmup_steps ({warmup_steps})")

    def schedule(count):
        s = jnp.asarray(count, jnp.float32)
        factor = jnp.ones_like(s)
        if decays:
            factor = jnp.where(s >= decay_start, (total_steps - s) / (total_steps - decay_start), factor)
        if warmup_steps > 0:
            factor = jnp.where(s < warmup_steps, s / warmup_steps, factor)
        return factor

    return schedule


def sparsity_factor(warmup_steps: int | None) -> optax.Schedule:
    """min(s / warmup_steps, 1); constant 1 when ``warmup_steps`` is None or 0."""
    if warmup_steps is not None and warmup_steps < 0:
        raise ValueError(f"sparsity warmup steps must be >= 0; got {warmup_steps}")

    def schedule(count):
        s = jnp.asarray(count, jnp.float32)
        if not warmup_steps:
            return jnp.ones_like(s)
        return jnp.minimum(s / warmup_steps, 1.0)

    return schedule
