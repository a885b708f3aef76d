"""The sparse (indices, values) TopK decoder equals the dense one: loss, aux, every gradient,
optimizer steps of a vmapped grid with AuxK active, and under a (sae, data) mesh."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from train_streams import factory, toy_activations

from interplm_jax.sae import StepContext, sparse, topk
from interplm_jax.train import TrainConfig, train_sweep
from interplm_jax.train.config import build_grid, grid_arrays
from interplm_jax.train.step import init_state, make_step
from interplm_jax.train.sweep import make_spec

D, F, B = 16, 96, 48


@pytest.fixture(scope="module")
def data():
    return toy_activations(n=B * 8, d=D, seed=5)


def _params(seed=0):
    k = jax.random.split(jax.random.key(seed), 3)
    p = topk.init(k[0], D, F, k=4)
    # varied biases; features 0..9 can never fire (dead, and silent for the AuxK top-k too)
    b_enc = (0.2 * jax.random.normal(k[1], (F,))).at[:10].set(-100.0)
    return {**p, "b_pre": 0.1 * jax.random.normal(k[2], (D,)), "b_enc": b_enc}


@pytest.mark.parametrize("k, k_max, n_dead", [(4, 6, 30), (5, 5, 0), (3, 7, F)])
def test_loss_aux_and_gradients_equal_dense(data, k, k_max, n_dead):
    params = _params()
    x = jnp.asarray(data[:B])
    dead = jnp.arange(F) >= F - n_dead  # the last n_dead features count as dead before this batch
    hp = {"k": jnp.int32(k), "auxk_alpha": jnp.float32(1 / 32)}
    train = {n: params[n] for n in topk.TRAINABLE}

    def run(decoder):
        ctx = StepContext(step=jnp.int32(3), sparsity_scale=jnp.float32(1.0), dead=dead,
                          k_max=k_max, decoder=decoder)
        fn = lambda t: topk.loss_topk({**params, **t}, x, hp, ctx)  # noqa: E731
        return jax.jit(jax.value_and_grad(fn, has_aux=True))(train)

    (want, ref), ref_grads = run("dense")
    (got, aux), grads = run("sparse")
    assert aux.row_min is not None and ref.row_min is None
    np.testing.assert_allclose(got, want, rtol=1e-5)
    np.testing.assert_array_equal(aux.counts, ref.counts)
    assert float(np.asarray(ref.counts).sum()) == B * k  # exactly k per row
    np.testing.assert_allclose(aux.f, ref.f, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(aux.x_hat, ref.x_hat, rtol=1e-5, atol=1e-6)
    for name in ("recon", "auxk"):
        np.testing.assert_allclose(aux.parts[name], ref.parts[name], rtol=1e-5, atol=1e-8)
    if n_dead:
        assert float(ref.parts["auxk"]) > 0
    else:
        assert float(ref.parts["auxk"]) == 0
    row_min = np.min(np.where(np.asarray(ref.f) > 0, ref.f, np.inf), axis=-1)
    np.testing.assert_allclose(aux.row_min, row_min, rtol=1e-6)
    for name in topk.TRAINABLE:
        scale = float(np.abs(ref_grads[name]).max())
        assert scale > 0, name
        np.testing.assert_allclose(grads[name], ref_grads[name], rtol=0, atol=2e-6 * scale,
                                   err_msg=name)


def test_custom_vjps_match_autodiff_of_plain_formulas():
    """gather_pre / decode_rows backward == autodiff of the gathers written plainly (incl. dx)."""
    k = jax.random.split(jax.random.key(1), 6)
    x, b_pre = jax.random.normal(k[0], (7, D)), jax.random.normal(k[1], (D,))
    W_enc, b_enc = jax.random.normal(k[2], (D, F)), jax.random.normal(k[3], (F,))
    idx = jax.random.randint(k[4], (7, 5), 0, F)  # repeated features across rows
    W_dec = jax.random.normal(k[5], (F, D))

    def ours(x, b_pre, W_enc, b_enc, W_dec):
        pre = jax.lax.stop_gradient((x - b_pre) @ W_enc + b_enc)
        v = sparse.gather_pre(x, b_pre, W_enc, b_enc, pre, idx)
        return jnp.sum(jnp.sin(sparse.decode_rows(W_dec, idx, jnp.tanh(v))))

    def plain(x, b_pre, W_enc, b_enc, W_dec):
        v = jnp.take_along_axis((x - b_pre) @ W_enc + b_enc, idx, axis=-1)
        return jnp.sum(jnp.sin(jnp.einsum("bk,bkd->bd", jnp.tanh(v), W_dec[idx])))

    args = (x, b_pre, W_enc, b_enc, W_dec)
    got = jax.grad(ours, argnums=range(5))(*args)
    want = jax.grad(plain, argnums=range(5))(*args)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def _steps(cfg, data, n=6):
    grid = build_grid(cfg)
    spec = make_spec(cfg, grid)
    hp = grid_arrays(grid, ("lr", "seed") + spec.arch.hparams)
    state = jax.jit(lambda h: init_state(spec, D, F, h))(hp)
    step = jax.jit(make_step(spec))
    ms = []
    for i in range(n):
        state, m = step(state, hp, jnp.asarray(data[i * B:(i + 1) * B]))
        ms.append(jax.device_get(m))
    return state, ms


def test_vmapped_grid_steps_equal_dense(data):
    """A grid of 3 TopK SAEs with different k (k_max = 6), AuxK on after 2 silent steps."""
    base = dict(arch="topk", steps=6, batch_size=B, warmup_steps=1, decay_start=4, d_sae=F,
                dead_tokens=2 * B, grid={"k": [2, 6, 4], "seed": [1]},
                hparams={"lr": 3e-3, "threshold_start_step": 1})
    dense, m_dense = _steps(TrainConfig(**base, decoder="dense"), data)
    sp, m_sp = _steps(TrainConfig(**base, decoder="sparse"), data)
    assert max(float(np.max(m["auxk"])) for m in m_dense) > 0
    for a, b in zip(m_sp, m_dense):
        for name in ("loss", "recon", "auxk", "l0", "fve", "dead"):
            np.testing.assert_allclose(a[name], b[name], rtol=1e-4, atol=1e-7, err_msg=name)
    for name, v in dense.params.items():
        np.testing.assert_allclose(sp.params[name], v, rtol=1e-4, atol=2e-6, err_msg=name)
    np.testing.assert_array_equal(sp.since_fired, dense.since_fired)


def test_auto_picks_sparse_for_small_k_only():
    assert topk.use_sparse("auto", 64, 10240) and topk.use_sparse("sparse", 64, 128)
    assert topk.use_sparse("auto", 320, 10240) and not topk.use_sparse("auto", 321, 10240)
    assert not topk.use_sparse("auto", 64, 512) and not topk.use_sparse("dense", 1, 10240)
    with pytest.raises(ValueError, match="decoder"):
        topk.use_sparse("gather", 4, 64)


def test_sharded_sweep_equals_single_device(data, tmp_path):
    assert jax.device_count() == 8
    cfg = dict(arch="topk", steps=4, batch_size=B, d_sae=F, log_every=2, checkpoint_every=4,
               dead_tokens=B, grid={"k": [3, 5], "lr": [1e-3, 3e-3]}, decoder="sparse")
    one = train_sweep(TrainConfig(**cfg, mesh_sae=1, mesh_data=1), factory(data, B), D,
                      tmp_path / "one", layer=1)
    mesh = train_sweep(TrainConfig(**cfg, mesh_sae=2, mesh_data=4), factory(data, B), D,
                       tmp_path / "mesh", layer=1)
    for k, v in one.params.items():
        np.testing.assert_allclose(mesh.params[k], v, rtol=2e-5, atol=2e-6, err_msg=k)


def test_sparse_encode_decode_equal_dense(data):
    params = {**_params(3), "scale": jnp.linspace(0.5, 2.0, F), "k": jnp.int32(5)}
    x = jnp.asarray(data[:B])
    vals, idx = topk.encode_topk_sparse(params, x, 5)
    f = np.asarray(topk.encode_topk(params, x))
    assert vals.shape == idx.shape == (B, 5)
    np.testing.assert_allclose(sparse.densify(idx, vals, F), f, rtol=1e-6)
    np.testing.assert_allclose(topk.decode_sparse(params, vals, idx), topk.decode(params, f),
                               rtol=1e-5, atol=1e-6)
    # the same by hand for one row
    row = [(int(i), float(v)) for i, v in zip(idx[0], vals[0])]
    want = sum(v * np.asarray(params["W_dec"][i]) for i, v in row) + np.asarray(params["b_pre"])
    np.testing.assert_allclose(topk.decode_sparse(params, vals, idx)[0], want, rtol=1e-5, atol=1e-6)
