"""The train state of a grid and its one compiled step (vmapped over the SAEs of the grid)."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import Array

from interplm_jax.sae import Architecture, StepContext, sparse
from interplm_jax.train.schedules import lr_factor, sparsity_factor
from interplm_jax.train.transforms import sae_optimizer


class TrainState(NamedTuple):
    """Everything that changes during training; leaves other than ``step`` have a leading G axis."""

    step: Array
    """() int32: updates done so far (the next update has this 0-based index)."""
    params: dict[str, Array]
    """SAE parameters and buffers, (G, ...) each."""
    opt_state: Any
    """optax state of the trainable leaves, (G, ...) each."""
    since_fired: Array
    """(G, F) int32: steps since each feature last fired (saturates at 2**30)."""
    key: Array
    """(G, 2) uint32: raw PRNG key of each SAE (dead-feature resampling)."""
    ok: Array
    """(G,) bool: False once the SAE produced a non-finite loss or gradient (frozen since)."""
    bad_step: Array
    """(G,) int32: the step of the first non-finite loss, -1 if none."""


class StepSpec(NamedTuple):
    """The static facts a compiled step depends on (hashable)."""

    arch: Architecture
    steps: int
    batch_size: int
    warmup_steps: float
    decay_start: int | None
    sparsity_warmup_steps: int
    resample_steps: int | None
    grad_clip: float | None
    dead_tokens: int
    k_max: int
    matmul_dtype: str
    decoder: str = "auto"
    sparse_capacity: int = 0
    """ReLU/JumpReLU: active entries per token the sparse branch holds (0: the default of
    :func:`sparse.step_capacity`)."""

    @property
    def dead_after(self) -> int:
        """Steps without firing after which a feature is dead (``dead_tokens`` / batch, ceil)."""
        return max(1, math.ceil(self.dead_tokens / self.batch_size))

    def optimizer(self, lr) -> optax.GradientTransformation:
        """The optimizer of one SAE with learning rate ``lr`` (may be traced)."""
        sched = lr_factor(self.steps, self.warmup_steps, self.decay_start)
        return sae_optimizer(self.arch, lr, sched, self.grad_clip)


def split_params(arch: Architecture, params: dict[str, Array]):
    """(trainable leaves, buffers) of one SAE's params dict."""
    train = {k: v for k, v in params.items() if k in arch.trainable}
    buffers = {k: v for k, v in params.items() if k not in arch.trainable}
    return train, buffers


def init_one(spec: StepSpec, d: int, F: int, hp: dict[str, Array]):
    """(params, opt_state, key) of one SAE from its hyperparameters (``seed`` picks the init)."""
    key = jax.random.PRNGKey(hp["seed"])
    init_key, run_key = jax.random.split(key)
    params = spec.arch.init(init_key, d, F, **spec.arch.init_kwargs(hp))
    train, _ = split_params(spec.arch, params)
    opt_state = spec.optimizer(hp["lr"]).init(train)
    return params, opt_state, run_key


def init_state(spec: StepSpec, d: int, F: int, hp: dict[str, Array]) -> TrainState:
    """The initial state of the grid (vmapped init over the (G,) hyperparameter arrays)."""
    params, opt_state, key = jax.vmap(lambda h: init_one(spec, d, F, h))(hp)
    G = key.shape[0]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=opt_state,
        since_fired=jnp.zeros((G, F), jnp.int32),
        key=key,
        ok=jnp.ones((G,), bool),
        bad_step=jnp.full((G,), -1, jnp.int32),
    )


def _update_one(spec: StepSpec, params, opt_state, since_fired, ok, bad_step, hp, x, step,
                pre=None, active=None):
    """One SAE's update on batch x: (B, d). Returns the new pieces and its metrics.

    pre: (B, F) encoder product computed by the step (or None); active: (B, K) each row's
    active features when this step decodes sparsely (or None)."""
    arch = spec.arch
    dtype = _dtype(spec)
    ctx = StepContext(
        step=step,
        sparsity_scale=sparsity_factor(spec.sparsity_warmup_steps)(step),
        # dead unless it fires on this batch (the reference counts the batch first)
        dead=since_fired + 1 >= spec.dead_after,
        k_max=spec.k_max,
        matmul_dtype=dtype,
        decoder=spec.decoder,
        pre=pre,
        active=active,
    )
    train, buffers = split_params(arch, params)

    def loss_fn(t):
        return arch.loss({**buffers, **t}, x, hp, ctx)

    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(train)
    finite = jnp.isfinite(loss) & jnp.isfinite(optax.tree.norm(grads))
    good = ok & finite
    # A non-finite SAE is frozen by zeroing its gradient and its update (not by selecting the
    # old state afterwards, which would make XLA copy every donated buffer each step). Its
    # optimizer state then no longer matters: it stays frozen.
    grads = jax.tree.map(lambda g: jnp.where(good, g, 0.0), grads)
    updates, new_opt = spec.optimizer(hp["lr"]).update(grads, opt_state, train)
    updates = jax.tree.map(lambda u: jnp.where(good, u, 0.0), updates)
    new_params = {**buffers, **optax.apply_updates(train, updates)}
    if arch.update_buffers is not None:
        updated = arch.update_buffers(new_params, aux, hp, ctx)
        new_params = {k: jnp.where(good, v, new_params[k]) for k, v in updated.items()}
    new_since = jnp.where(aux.counts > 0, 0, jnp.minimum(since_fired + 1, 2**30))
    new_since = jnp.where(good, new_since, since_fired)
    new_bad = jnp.where(ok & ~finite, step, bad_step)

    e = x - aux.x_hat
    sq = jnp.sum(e**2)
    metrics = {
        "loss": loss,
        **aux.parts,
        # (the barrier keeps XLA from re-reducing the (B, F) mask for this sum)
        "l0": jnp.sum(jax.lax.optimization_barrier(aux.counts)) / x.shape[0],
        "mse": sq / e.size,
        "fve": 1.0 - sq / jnp.sum((x - x.mean(axis=0)) ** 2),
        "dead": jnp.mean((new_since >= spec.dead_after).astype(jnp.float32)),
        "lr": hp["lr"] * lr_factor(spec.steps, spec.warmup_steps, spec.decay_start)(step),
    }
    return new_params, new_opt, new_since, good, new_bad, metrics


def _resample_one(params, since_fired, key, x, resample_steps: int):
    """Reinitialise the features of one ReLU SAE dead for > resample_steps / 2 steps.

    As the reference: each dead feature gets a batch row (drawn without replacement, or with
    replacement when more features than rows are dead) plus 0.01 * N(0, 1) noise, scaled to
    unit norm, as its encoder column and decoder row; its encoder bias becomes 0. The Adam state
    is left as it is (as the reference).
    """
    F, d = params["W_dec"].shape
    B = x.shape[0]
    dead = since_fired > resample_steps / 2
    n_dead = jnp.sum(dead)
    key, k_perm, k_int, k_noise = jax.random.split(key, 4)
    rank = jnp.cumsum(dead) - 1
    perm = jax.random.permutation(k_perm, B)
    with_repl = jax.random.randint(k_int, (F,), 0, B)
    idx = jnp.where(n_dead <= B, perm[jnp.clip(rank, 0, B - 1)], with_repl[jnp.clip(rank, 0, F - 1)])
    rows = x[idx] + 0.01 * jax.random.normal(k_noise, (F, d), x.dtype)
    rows = rows / jnp.linalg.norm(rows, axis=-1, keepdims=True)
    new = {
        **params,
        "W_enc": jnp.where(dead[None, :], rows.T, params["W_enc"]),
        "b_enc": jnp.where(dead, 0.0, params["b_enc"]),
        "W_dec": jnp.where(dead[:, None], rows, params["W_dec"]),
    }
    return new, jnp.where(dead, 0, since_fired), key


def _dtype(spec: StepSpec):
    return None if spec.matmul_dtype == "float32" else jnp.dtype(spec.matmul_dtype)


def _select(spec: StepSpec, params, hp, x, capacity: int):
    """(pre (B, F), active, overflow ()) of one SAE: its encoder product without gradient, and
    the batch's active entries listed in ``capacity`` slots by :func:`sparse.compact`."""
    arch = spec.arch
    pre = jax.lax.stop_gradient(arch.encoder_product(params, x, _dtype(spec)))
    active, overflow = sparse.compact(arch.active_mask(params, pre, hp), capacity)
    return pre, active, overflow


def make_step(spec: StepSpec):
    """``step(state, hparams, x) -> (state, metrics)`` for the whole grid (not yet jitted).

    hparams: name -> (G,) arrays; x: (B, d) batch shared by all SAEs; metrics: name -> (G,).
    ReLU/JumpReLU with a sparse branch (:func:`sparse.step_capacity`): the step computes every
    SAE's encoder product, lists the batch's active entries in a fixed capacity, and runs the
    sparse update of the whole grid, or the dense one when the entries of some SAE
    do not fit (one ``lax.cond`` outside the vmaps, so no SAE runs both branches); metrics then
    include ``sparse`` (1.0 when the step was sparse).
    """

    def step_fn(state: TrainState, hp: dict[str, Array], x: Array):
        def update(pre, active):
            def one(p, o, s, ok, bad, h, pr, ac):
                return _update_one(spec, p, o, s, ok, bad, h, x, state.step, pr, ac)
            return jax.vmap(one)(state.params, state.opt_state, state.since_fired, state.ok,
                                 state.bad_step, hp, pre, active)

        F = state.since_fired.shape[-1]
        capacity = (sparse.step_capacity(spec.decoder, spec.sparse_capacity, F, x.shape[0])
                    if spec.arch.active_mask is not None else 0)
        if capacity:
            pre, active, overflow = jax.vmap(lambda p, h: _select(spec, p, h, x, capacity))(
                state.params, hp)
            fits = ~jnp.any(overflow)
            params, opt, since, ok, bad, metrics = jax.lax.cond(
                fits, lambda: update(pre, active), lambda: update(pre, None))
            metrics["sparse"] = jnp.broadcast_to(fits.astype(jnp.float32), ok.shape)
        else:
            params, opt, since, ok, bad, metrics = update(None, None)
        key = state.key
        if spec.resample_steps:
            def resample(args):
                p, s, k = args
                return jax.vmap(lambda a, b, c: _resample_one(a, b, c, x, spec.resample_steps))(p, s, k)

            # the step is shared by the grid, so this is a real branch (not a select)
            params, since, key = jax.lax.cond(
                state.step % spec.resample_steps == 0, resample, lambda a: a, (params, since, key))
        return TrainState(state.step + 1, params, opt, since, key, ok, bad), metrics

    return step_fn
