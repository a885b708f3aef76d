"""The compiled step: one ReLU step against plain NumPy, schedules, vmapped grid == singles,
decoder norms, resampling, non-finite losses."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from train_streams import toy_activations

from interplm_jax.train.config import TrainConfig, build_grid, grid_arrays
from interplm_jax.train.schedules import lr_factor, sparsity_factor
from interplm_jax.train.step import init_state, make_step
from interplm_jax.train.sweep import make_spec

D, F, B = 12, 40, 32
# One ReLU step spec shared by most tests here (one compilation of init and step).
RELU = dict(steps=10, batch_size=B, warmup_steps=0, decay_start=-1, sparsity_warmup_steps=4,
            resample_steps=4)
GRID3 = {"lr": [3e-3, 1e-3, 1e-2], "l1": [0.2], "seed": [4]}


@pytest.fixture(scope="module")
def data():
    return toy_activations(n=B * 8, d=D, seed=1)


@functools.lru_cache(maxsize=None)
def compiled(spec):
    """(jitted init, jitted step) of a spec, shared by tests with equal specs."""
    return jax.jit(lambda hp: init_state(spec, D, F, hp)), jax.jit(make_step(spec))


def setup(cfg: TrainConfig):
    grid = build_grid(cfg)
    spec = make_spec(cfg, grid)
    hp = grid_arrays(grid, ("lr", "seed") + spec.arch.hparams)
    init, step = compiled(spec)
    return spec, hp, init(hp), step


def numpy_relu_step(p, x, lr, l1_coef, clip=1.0, b1=0.9, b2=0.999, eps=1e-8):
    """Loss and parameters after one ReLU step from fresh Adam state, by hand."""
    p = {k: v.astype(np.float64) for k, v in p.items()}
    x = x.astype(np.float64)
    n = len(x)
    pre = (x - p["b_pre"]) @ p["W_enc"] + p["b_enc"]
    f = np.maximum(pre, 0)
    e = x - (f @ p["W_dec"] + p["b_pre"])
    norms = np.linalg.norm(e, axis=1)
    loss = norms.mean() + l1_coef * np.abs(f).sum(axis=1).mean()
    d_xhat = -(e / norms[:, None]) / n
    d_pre = (d_xhat @ p["W_dec"].T + l1_coef * (f > 0) / n) * (pre > 0)
    g = {
        "W_dec": f.T @ d_xhat,
        "b_pre": d_xhat.sum(0) - (d_pre @ p["W_enc"].T).sum(0),
        "W_enc": (x - p["b_pre"]).T @ d_pre,
        "b_enc": d_pre.sum(0),
    }
    total = np.sqrt(sum((v**2).sum() for v in g.values()))
    g = {k: v * min(1.0, clip / total) for k, v in g.items()}  # clip first (ReLU trainer)
    unit = p["W_dec"] / np.linalg.norm(p["W_dec"], axis=1, keepdims=True)
    g["W_dec"] = g["W_dec"] - (g["W_dec"] * unit).sum(1, keepdims=True) * unit
    new = {}
    for k, gk in g.items():
        m, v = (1 - b1) * gk, (1 - b2) * gk**2
        m_hat, v_hat = m / (1 - b1), v / (1 - b2)
        new[k] = p[k] - lr * m_hat / (np.sqrt(v_hat) + eps)
    new["W_dec"] /= np.linalg.norm(new["W_dec"], axis=1, keepdims=True)
    return loss, total, new


def test_one_relu_step_matches_numpy(data):
    cfg = TrainConfig(**RELU, grid=GRID3)
    spec, hp, state, step = setup(cfg)
    p0 = jax.tree.map(lambda a: np.asarray(a[0]), state.params)
    x = data[:B]
    state, m = step(state, hp, jnp.asarray(x))
    loss, gnorm, new = numpy_relu_step(p0, x, 3e-3, l1_coef=0.2 * 0 / 4)
    assert gnorm > 1.0  # the clip took part
    np.testing.assert_allclose(float(m["loss"][0]), loss, rtol=1e-6)
    for k, v in new.items():
        np.testing.assert_allclose(np.asarray(state.params[k][0]), v, rtol=1e-5, atol=1e-6, err_msg=k)
    # second step: the L1 warmup is at 1/4
    p1 = jax.tree.map(lambda a: np.asarray(a[0]), state.params)
    _, m = step(state, hp, jnp.asarray(data[B:2 * B]))
    loss2, _, _ = numpy_relu_step(p1, data[B:2 * B], 3e-3, l1_coef=0.2 * 1 / 4)
    np.testing.assert_allclose(float(m["loss"][0]), loss2, rtol=1e-6)
    assert float(m["l1_coef"][0]) == pytest.approx(0.05)


def test_schedules_hand_checked():
    lr = lr_factor(100, 5, 50)
    got = [float(lr(s)) for s in (0, 2, 5, 49, 50, 75, 99)]
    assert got == pytest.approx([0, 0.4, 1, 1, 1, 0.5, 0.02])
    assert [float(lr_factor(10, 0, None)(s)) for s in (0, 9)] == [1, 1]
    sp = sparsity_factor(10)
    assert [float(sp(s)) for s in (0, 5, 10, 20)] == pytest.approx([0, 0.5, 1, 1])
    assert float(sparsity_factor(0)(0)) == 1
    with pytest.raises(ValueError, match="decay_start"):
        lr_factor(100, 10, 5)
    # defaults as the reference: warmup steps*0.05 (float), decay at steps//2, L1 int(5%)
    assert TrainConfig(steps=1001).schedule_steps() == (50.050000000000004, 500, 50)
    assert TrainConfig(steps=1000, decay_start=-1).schedule_steps()[1] is None
    assert TrainConfig(arch="jumprelu", steps=10000).schedule_steps()[2] == 2000


def test_vmapped_grid_equals_each_sae_alone(data):
    cfg = TrainConfig(**RELU, grid=GRID3)
    _, hp, state, step = setup(cfg)
    rows = build_grid(cfg)
    for i in range(6):
        state, _ = step(state, hp, jnp.asarray(data[i * B:(i + 1) * B]))
    for g, row in enumerate(rows):
        single = TrainConfig(**RELU, hparams={k: row[k] for k in ("lr", "l1", "seed")})
        _, hp1, st1, step1 = setup(single)
        for i in range(6):
            st1, _ = step1(st1, hp1, jnp.asarray(data[i * B:(i + 1) * B]))
        for k in st1.params:
            np.testing.assert_allclose(state.params[k][g], st1.params[k][0], rtol=1e-6,
                                       atol=1e-7, err_msg=f"{row['id']} {k}")
    # different learning rates really gave different SAEs
    assert not np.allclose(state.params["W_enc"][0], state.params["W_enc"][2])


def test_decoder_rows_unit_norm_after_every_step(data):
    """(Also checked for every architecture at every step of the reference parity tests.)"""
    _, hp, state, step = setup(TrainConfig(**RELU, grid=GRID3))
    for i in range(5):
        before = np.asarray(state.params["W_dec"])
        state, _ = step(state, hp, jnp.asarray(data[i * B:(i + 1) * B]))
        w = np.asarray(state.params["W_dec"])
        np.testing.assert_allclose(np.linalg.norm(w, axis=-1), 1.0, atol=2e-6)
        assert np.abs(w - before).max() > 1e-4


def test_dead_features_are_resampled_from_the_batch(data):
    _, hp, state, step = setup(TrainConfig(**RELU, grid=GRID3))
    dead = np.zeros((3, F), bool)
    dead[0, [3, 7, 11]] = True  # SAE 0: three features silent for 10 steps; SAE 1: none
    # make them stay silent on this batch too: large negative encoder bias
    b_enc = np.where(dead, -1e3, np.asarray(state.params["b_enc"]))
    since = np.where(dead, 10, 0).astype(np.int32)
    state = state._replace(step=jnp.int32(4), since_fired=jnp.asarray(since),
                           params={**state.params, "b_enc": jnp.asarray(b_enc, jnp.float32)})
    x = data[:B]
    new, _ = step(state, hp, jnp.asarray(x))
    w_dec, w_enc = np.asarray(new.params["W_dec"]), np.asarray(new.params["W_enc"])
    unit_x = x / np.linalg.norm(x, axis=1, keepdims=True)
    for j in (3, 7, 11):
        np.testing.assert_allclose(w_enc[0][:, j], w_dec[0][j], rtol=1e-6)
        assert np.abs(unit_x @ w_dec[0][j]).max() > 0.95  # a batch row plus 0.01 * N(0, 1) noise
        assert float(new.params["b_enc"][0][j]) == 0.0
    picked = [int(np.argmax(unit_x @ w_dec[0][j])) for j in (3, 7, 11)]
    assert len(set(picked)) == 3  # drawn without replacement
    assert np.asarray(new.since_fired)[0][[3, 7, 11]].tolist() == [0, 0, 0]
    assert (np.asarray(new.params["b_enc"])[1] > -1).all()
    # not at a resampling step: nothing happens
    later, _ = step(state._replace(step=jnp.int32(5)), hp, jnp.asarray(x))
    assert float(later.params["b_enc"][0][3]) < -900


def test_non_finite_sae_is_frozen_and_others_go_on(data):
    _, hp, state, step = setup(TrainConfig(**RELU, grid=GRID3))
    b_pre = np.asarray(state.params["b_pre"]).copy()
    b_pre[1, 0] = np.nan
    state = state._replace(params={**state.params, "b_pre": jnp.asarray(b_pre)})
    w1 = np.asarray(state.params["W_enc"][1])
    for i in range(3):
        state, m = step(state, hp, jnp.asarray(data[i * B:(i + 1) * B]))
    assert np.asarray(state.ok).tolist() == [True, False, True]
    assert np.asarray(state.bad_step).tolist() == [-1, 0, -1]
    np.testing.assert_array_equal(np.asarray(state.params["W_enc"][1]), w1)
    assert np.isfinite(np.asarray(state.params["W_enc"][0])).all()
    assert np.isfinite(float(m["loss"][0]))


def test_bfloat16_matmuls_stay_close_to_float32(data):
    _, hp, s32, step32 = setup(TrainConfig(**RELU, grid=GRID3))
    _, _, s16, step16 = setup(TrainConfig(**RELU, grid=GRID3, matmul_dtype="bfloat16"))
    x = jnp.asarray(data[:B])
    s32, m32 = step32(s32, hp, x)
    s16, m16 = step16(s16, hp, x)
    assert s16.params["W_enc"].dtype == jnp.float32  # parameters stay float32
    np.testing.assert_allclose(m16["loss"], m32["loss"], rtol=2e-2)
    assert not np.array_equal(np.asarray(m16["loss"]), np.asarray(m32["loss"]))


@pytest.mark.parametrize("matmul_dtype", [None, jnp.bfloat16])
def test_relu_written_out_backward_equals_autodiff(data, matmul_dtype):
    """relu.loss (hand-written VJP) == autodiff of relu.reference_loss: value, aux, gradients."""
    from interplm_jax.sae import relu
    from interplm_jax.sae._types import StepContext

    d, F = data.shape[1], 40
    k = jax.random.split(jax.random.key(7), 3)
    params = {**relu.init(k[0], d, F), "b_pre": 0.1 * jax.random.normal(k[1], (d,)),
              "b_enc": (0.3 * jax.random.normal(k[2], (F,))).at[:5].set(-100.0)}  # 5 never fire
    x = jnp.asarray(data[:64])
    ctx = StepContext(step=jnp.int32(3), sparsity_scale=jnp.float32(0.7), dead=None, k_max=1,
                      matmul_dtype=matmul_dtype)
    train = {n: params[n] for n in relu.TRAINABLE}

    def run(fn):
        return jax.jit(jax.value_and_grad(lambda t: fn({**params, **t}, x, {"l1": jnp.float32(0.1)}, ctx),
                                          has_aux=True))(train)

    (got, aux), grads = run(relu.loss)
    (want, ref_aux), ref_grads = run(relu.reference_loss)
    tol = 1e-6 if matmul_dtype is None else 1e-2
    assert (np.asarray(ref_aux.counts) == 0).any() and (np.asarray(ref_aux.counts) > 0).any()
    np.testing.assert_allclose(got, want, rtol=tol)
    np.testing.assert_array_equal(aux.counts, ref_aux.counts)
    np.testing.assert_allclose(aux.f, ref_aux.f, rtol=tol, atol=tol)
    for name in ("recon", "l1", "l1_coef"):
        np.testing.assert_allclose(aux.parts[name], ref_aux.parts[name], rtol=tol)
    for name in relu.TRAINABLE:
        scale = float(np.abs(ref_grads[name]).max())
        np.testing.assert_allclose(grads[name], ref_grads[name], rtol=0, atol=tol * scale, err_msg=name)
