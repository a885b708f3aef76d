"""The sparse ReLU/JumpReLU step equals the dense one: compaction against NumPy, loss and every
gradient, several optimizer steps of a vmapped grid (sparse and overflowing steps), a (sae,
data) mesh, and options that do not apply to an architecture refused."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from train_streams import factory, toy_activations

from interplm_jax.config import from_dict
from interplm_jax.errors import InputError
from interplm_jax.sae import StepContext, jumprelu, relu, sparse
from interplm_jax.train import TrainConfig, train_sweep
from interplm_jax.train.config import build_grid, grid_arrays
from interplm_jax.train.step import init_state, make_step
from interplm_jax.train.sweep import make_spec

D, F, B = 16, 96, 48


@pytest.fixture(scope="module")
def data():
    return toy_activations(n=B * 8, d=D, seed=7)


@pytest.mark.parametrize("B, F, p", [(6, 20, 0.2), (5, 64, 0.3), (9, 100, 0.05)])
def test_compact_lists_the_batchs_entries_in_token_order(B, F, p):
    rng = np.random.default_rng(B)
    mask = rng.random((B, F)) < p
    mask[2] = False                         # a token with nothing active
    mask[-1, [0, F - 1]] = True             # the first and the last feature (F % 32 != 0 too)
    total = int(mask.sum())
    want_rows, want_cols = np.nonzero(mask)
    for capacity in (total, total + 7):
        e, over = sparse.compact(jnp.asarray(mask), capacity)
        rows, cols, valid = map(np.asarray, e)
        assert not bool(over) and rows.shape == (capacity,)
        np.testing.assert_array_equal(valid, np.arange(capacity) < total)
        np.testing.assert_array_equal(rows[:total], want_rows)  # token order
        for b in range(B):  # each token's features, in some order
            assert sorted(cols[:total][rows[:total] == b]) == sorted(want_cols[want_rows == b])
        assert np.all(rows[total:] == B) and np.all(cols[total:] == F)  # padding: out of range
    e, over = sparse.compact(jnp.asarray(mask), total - 1)
    assert bool(over)
    assert np.all(np.asarray(e.valid))  # the first total - 1 entries
    np.testing.assert_array_equal(np.asarray(e.rows), want_rows[:total - 1])


def test_step_capacity_resolution():
    assert sparse.step_capacity("sparse", 0, 10240, 2048) == 2048 * 64    # 64 per token
    assert sparse.step_capacity("sparse", 0, 20480, 100) == 100 * 128     # scaled with F
    assert sparse.step_capacity("sparse", 40, 10240, 2048) == 2048 * 40
    assert sparse.step_capacity("sparse", 0, 16, 8) == 8                  # at least 1 per token
    assert sparse.step_capacity("sparse", 100, 96, 8) == 8 * 96           # at most F per token
    assert sparse.step_capacity("dense", 8, 10240, 2048) == 0
    assert sparse.step_capacity("auto", 0, 10240, 2048) == 2048 * 64     # auto: sparse branch
    assert sparse.step_capacity("auto", 0, 4095, 2048) == 0               # ... from F = 4,096
    with pytest.raises(ValueError, match="decoder"):
        sparse.step_capacity("gather", 0, 64, 8)


def _relu_params():
    k = jax.random.split(jax.random.key(0), 3)
    p = relu.init(k[0], D, F)
    # most features rarely fire (a sparse SAE), a few never
    b_enc = (-1.5 + 0.3 * jax.random.normal(k[1], (F,))).at[:5].set(-100.0)
    return {**p, "b_pre": 0.1 * jax.random.normal(k[2], (D,)), "b_enc": b_enc}


def _jumprelu_params():
    k = jax.random.split(jax.random.key(1), 3)
    p = jumprelu.init(k[0], D, F)
    # thresholds around 0 (negative ones too), so the rectangle windows of the threshold's
    # gradient hold entries below the threshold, and |t| < bandwidth/2 counts every f = 0 entry
    t = 1.5 + 0.4 * jax.random.normal(k[1], (F,))
    t = t.at[:8].set(jnp.linspace(-0.04, 0.04, 8))
    return {**p, "threshold": t, "b_enc": -0.5 + 0.1 * jax.random.normal(k[2], (F,)),
            "b_dec": 0.1 * jnp.ones((D,))}


ARCHS = {
    "relu": (relu, _relu_params, {"l1": jnp.float32(0.3)}),
    "jumprelu": (jumprelu, _jumprelu_params,
                 {"bandwidth": jnp.float32(0.1), "target_l0": jnp.float32(4.0),
                  "sparsity_penalty": jnp.float32(2.0)}),
}


@pytest.mark.parametrize("name", ["relu", "jumprelu"])
def test_loss_aux_and_every_gradient_equal_dense(data, name):
    mod, make_params, hp = ARCHS[name]
    params = make_params()
    x = jnp.asarray(data[:B])
    train = {n: params[n] for n in mod.TRAINABLE}
    ctx = StepContext(step=jnp.int32(3), sparsity_scale=jnp.float32(0.7),
                      dead=jnp.zeros((F,), bool))
    pre = jax.lax.stop_gradient(mod.encoder_product(params, x))
    mask = mod.active_mask(params, pre, hp)
    n_active = np.asarray(jnp.sum(mask, axis=-1))
    assert 0 < n_active.max() < F // 2  # sparse, and not trivially empty
    active, over = sparse.compact(mask, int(n_active.sum()) + 5)  # with padding slots
    assert not bool(over)

    def run(c):
        fn = lambda t: mod.loss({**params, **t}, x, hp, c)  # noqa: E731
        return jax.jit(jax.value_and_grad(fn, has_aux=True))(train)

    (want, ref), ref_grads = run(ctx)                                     # dense, as today
    (given, given_aux), given_grads = run(ctx._replace(pre=pre))          # dense, pre given
    (got, aux), grads = run(ctx._replace(pre=pre, active=active))         # sparse
    for value, a, g in ((given, given_aux, given_grads), (got, aux, grads)):
        np.testing.assert_allclose(value, want, rtol=1e-5)
        np.testing.assert_array_equal(a.counts, ref.counts)
        np.testing.assert_allclose(a.f, ref.f, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(a.x_hat, ref.x_hat, rtol=1e-5, atol=1e-6)
        for part in ref.parts:
            np.testing.assert_allclose(a.parts[part], ref.parts[part], rtol=1e-5, atol=1e-8)
        for n in mod.TRAINABLE:
            scale = float(np.abs(ref_grads[n]).max())
            assert scale > 0, n
            np.testing.assert_allclose(g[n], ref_grads[n], rtol=0, atol=2e-6 * scale, err_msg=n)


def test_jumprelu_sparse_counts_entries_outside_the_slots():
    """The L0 estimator's gradient to a threshold within bandwidth/2 of 0 comes from every
    f = 0 entry of its column, none of which is in the slots: by hand, on 4 equal rows.

    pre = b_enc = (1, -1, 0) on every row, thresholds (0.5, 0.01, 2), bandwidth 0.1: only
    feature 0 is active (f = 1), L0 = 1; with target 2 the loss's sparsity term is
    (L0/2 - 1)^2, d/dL0 = -0.5. Feature 1: f = 0 is within bw/2 of t = 0.01 on all rows, so
    dL0/dt_1 = mean_b -(1/bw) R(-t/bw) = -10 and dL/dt_1 = 5; features 0 and 2 get 0
    (their windows hold no entry)."""
    x = jnp.zeros((4, 2))
    params = {"W_enc": jnp.zeros((2, 3)), "b_enc": jnp.asarray([1.0, -1.0, 0.0]),
              "W_dec": jnp.eye(3, 2), "b_dec": jnp.zeros(2),
              "threshold": jnp.asarray([0.5, 0.01, 2.0]), "scale": jnp.ones(3)}
    hp = {"bandwidth": jnp.float32(0.1), "target_l0": jnp.float32(2.0),
          "sparsity_penalty": jnp.float32(1.0)}
    pre = jumprelu.encoder_product(params, x)
    active, over = sparse.compact(jumprelu.active_mask(params, pre, hp), 6)
    assert not bool(over) and np.all(np.asarray(active.cols)[:4] == 0)  # only feature 0 is active
    assert not np.any(np.asarray(active.valid)[4:])
    ctx = StepContext(step=jnp.int32(0), sparsity_scale=jnp.float32(1.0),
                      dead=jnp.zeros((3,), bool))
    train = {n: params[n] for n in jumprelu.TRAINABLE}
    for c in (ctx, ctx._replace(pre=pre, active=active)):
        fn = lambda t: jumprelu.loss({**params, **t}, x, hp, c)  # noqa: E731
        (_, aux), g = jax.value_and_grad(fn, has_aux=True)(train)
        np.testing.assert_allclose(aux.parts["l0_ste"], 1.0)
        np.testing.assert_allclose(g["threshold"], [0.0, 5.0, 0.0], atol=1e-5)


def _steps(cfg, data, n=6, start=None):
    grid = build_grid(cfg)
    spec = make_spec(cfg, grid)
    hp = grid_arrays(grid, ("lr", "seed") + spec.arch.hparams)
    state = jax.jit(lambda h: init_state(spec, D, F, h))(hp)
    if start is not None:
        state = state._replace(params={**state.params, **start(state.params)})
    step = jax.jit(make_step(spec))
    ms, most = [], []  # metrics, and the most active entries of a batch (any SAE) at each step
    for i in range(n):
        x = jnp.asarray(data[i * B:(i + 1) * B])

        def n_active(p, h):
            return jnp.sum(spec.arch.active_mask(p, spec.arch.encoder_product(p, x), h))

        most.append(int(jnp.max(jax.vmap(n_active)(state.params, hp))))
        state, m = step(state, hp, x)
        ms.append(jax.device_get(m))
    return state, ms, most


def _sparse_start(name):
    """A sparse SAE to start from: encoder biases pulled down (ReLU), thresholds up (JumpReLU)."""
    def start(params):
        if name == "relu":
            return {"b_enc": params["b_enc"] - 1.5}
        return {"threshold": params["threshold"] + 3.0}
    return start


GRIDS = {
    "relu": dict(arch="relu", grid={"l1": [0.05, 0.3], "lr": [3e-3, 1e-2]}),
    "jumprelu": dict(arch="jumprelu", sparsity_warmup_steps=2,
                     grid={"bandwidth": [0.05, 0.2], "lr": [3e-3, 1e-2]},
                     hparams={"target_l0": 3.0}),
}


@pytest.mark.parametrize("name", ["relu", "jumprelu"])
def test_vmapped_grid_steps_equal_dense(data, name):
    """6 optimizer steps of a grid of 4: sparse steps, and overflowing steps that run dense."""
    base = dict(steps=6, batch_size=B, warmup_steps=1, decay_start=4, d_sae=F, **GRIDS[name])
    dense, m_dense, most = _steps(TrainConfig(**base, decoder="dense"), data,
                                  start=_sparse_start(name))
    capacity = sorted(most)[len(most) // 2] // B  # entries per token
    # sparse, and the batch's entries fit at some steps but not at others
    assert max(most) < B * F // 4 and min(most) <= B * capacity < max(most)
    sp, m_sp, _ = _steps(TrainConfig(**base, decoder="sparse", sparse_capacity=capacity), data,
                         start=_sparse_start(name))
    # the step ran sparse exactly when the entries of every SAE fitted
    assert [float(m["sparse"][0]) for m in m_sp] == [float(n <= B * capacity) for n in most]
    assert "sparse" not in m_dense[0]
    for a, b in zip(m_sp, m_dense):
        for k in b:
            np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-6, err_msg=k)
    for k, v in dense.params.items():
        np.testing.assert_allclose(sp.params[k], v, rtol=1e-4, atol=2e-6, err_msg=k)
    np.testing.assert_array_equal(sp.since_fired, dense.since_fired)
    # a capacity of 1 overflows at every step: the dense branch, the same numbers again
    tiny, m_tiny, _ = _steps(TrainConfig(**base, decoder="sparse", sparse_capacity=1), data,
                          start=_sparse_start(name))
    assert [float(m["sparse"][0]) for m in m_tiny] == [0.0] * 6
    for k, v in dense.params.items():
        np.testing.assert_allclose(tiny.params[k], v, rtol=1e-5, atol=1e-6, err_msg=k)


def test_sharded_sweep_equals_single_device_and_dense(data, tmp_path):
    assert jax.device_count() == 8
    cfg = dict(arch="relu", steps=4, batch_size=B, d_sae=F, log_every=1, checkpoint_every=4,
               grid={"l1": [1.0, 2.0], "lr": [1e-3, 3e-3]}, sparse_capacity=90)
    one = train_sweep(TrainConfig(**cfg, decoder="sparse", mesh_sae=1, mesh_data=1),
                      factory(data, B), D, tmp_path / "one", layer=1)
    mesh = train_sweep(TrainConfig(**cfg, decoder="sparse", mesh_sae=2, mesh_data=4),
                       factory(data, B), D, tmp_path / "mesh", layer=1)
    dense = train_sweep(TrainConfig(**cfg, decoder="dense", mesh_sae=2, mesh_data=4),
                        factory(data, B), D, tmp_path / "dense", layer=1)
    lines = (tmp_path / "mesh" / "metrics.jsonl").read_text().splitlines()
    assert '"sparse": 1.0' in "".join(lines)  # some steps ran sparse
    for k, v in one.params.items():
        np.testing.assert_allclose(mesh.params[k], v, rtol=2e-5, atol=2e-6, err_msg=k)
        np.testing.assert_allclose(dense.params[k], v, rtol=2e-5, atol=2e-6, err_msg=k)


@pytest.mark.parametrize("data, message", [
    ({"arch": "batchtopk", "decoder": "sparse"}, "decoder: sparse applies to relu, topk, "
                                                  "jumprelu; batchtopk decodes densely"),
    ({"arch": "topk", "sparse_capacity": 64}, "sparse_capacity applies to the relu and "
                                               "jumprelu architectures only, not topk"),
    ({"sparse_capacity": -1}, "sparse_capacity=-1: must be >= 0"),
])
def test_options_that_do_not_apply_are_refused(data, message):
    with pytest.raises(InputError, match=message):
        from_dict(TrainConfig, data, "cfg.yaml:train")
