"""SAE architectures: initialisation, encode/decode formulas, TopK counts, JumpReLU estimator."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from interplm_jax import sae
from interplm_jax.errors import InputError
from interplm_jax.sae import StepContext, jumprelu, topk

D, F = 8, 48


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).normal(size=(32, D)).astype(np.float32)


@pytest.mark.parametrize("arch", sorted(set(sae.ARCHITECTURES) - {"neuron"}))
def test_init_as_reference(arch):
    p = jax.tree.map(np.asarray, sae.get(arch).init(jax.random.key(0), D, F))
    np.testing.assert_allclose(np.linalg.norm(p["W_dec"], axis=1), 1.0, rtol=2e-6)
    assert not p["b_enc"].any()
    assert (p["scale"] == 1).all()
    if arch == "relu":
        assert not p["b_pre"].any()
        # nn.Linear(d, F) default: U(-1/sqrt(d), 1/sqrt(d)), independent of the decoder
        assert np.abs(p["W_enc"]).max() <= 1 / np.sqrt(D)
        assert np.abs(p["W_enc"]).max() > 0.8 / np.sqrt(D)
        assert not np.allclose(p["W_enc"], p["W_dec"].T)
    else:
        np.testing.assert_array_equal(p["W_enc"], p["W_dec"].T)
    if arch == "jumprelu":
        np.testing.assert_allclose(p["threshold"], 0.001)
    if arch in ("topk", "batchtopk"):
        assert p["threshold"] == -1 and p["k"] == 10


def test_relu_encode_decode_formula(x):
    arch = sae.get("relu")
    p = arch.init(jax.random.key(1), D, F)
    p = {**p, "b_pre": jnp.linspace(-1, 1, D), "b_enc": jnp.linspace(-0.2, 0.2, F),
         "scale": jnp.linspace(0.5, 2, F)}
    n = jax.tree.map(np.asarray, p)
    f = np.maximum((x - n["b_pre"]) @ n["W_enc"] + n["b_enc"], 0) * n["scale"]
    np.testing.assert_allclose(arch.encode(p, x), f, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(arch.decode(p, f), f @ n["W_dec"] + n["b_pre"], rtol=1e-5, atol=1e-5)


def test_topk_keeps_exactly_k_per_row(x):
    acts = jax.nn.relu(jnp.asarray(x) @ jax.random.normal(jax.random.key(2), (D, F)))
    for k in (1, 3, 7):
        f = np.asarray(topk.topk_mask(acts, jnp.int32(k), 7))
        assert ((f != 0).sum(axis=1) == k).all()
        # the kept entries are the k largest of each row
        np.testing.assert_allclose(np.sort(f, axis=1)[:, -k:], np.sort(np.asarray(acts), axis=1)[:, -k:])


def test_batchtopk_keeps_k_times_batch(x):
    acts = jax.nn.relu(jnp.asarray(x) @ jax.random.normal(jax.random.key(3), (D, F)))
    for k in (1, 4):
        f = np.asarray(topk.batch_topk_mask(acts, jnp.int32(k), 4))
        assert (f != 0).sum() == k * x.shape[0]
        kept = np.sort(f.ravel())[-k * x.shape[0]:]
        np.testing.assert_allclose(kept, np.sort(np.asarray(acts).ravel())[-k * x.shape[0]:])


def test_batchtopk_inference_uses_threshold(x):
    arch = sae.get("batchtopk")
    p = {**arch.init(jax.random.key(4), D, F, k=3), "threshold": jnp.float32(0.3)}
    pre = np.maximum((x - np.asarray(p["b_pre"])) @ np.asarray(p["W_enc"]), 0)
    np.testing.assert_allclose(arch.encode(p, x), pre * (pre > 0.3), rtol=1e-5, atol=1e-6)
    # TopK inference keeps the top k of each row instead
    f = np.asarray(sae.get("topk").encode({**p}, x))
    assert ((f != 0).sum(axis=1) == 3).all()


def test_jumprelu_straight_through_gradients():
    """Hand-worked example of the rectangle-kernel estimator (bandwidth 0.5)."""
    x = jnp.array([[0.9, 0.2, 1.4], [0.1, 0.45, 0.6]])
    thr = jnp.array([1.0, 0.3, 0.5])
    bw = jnp.float32(0.5)
    out, vjp = jax.vjp(lambda a, t: jumprelu.jump(a, t, bw), x, thr)
    np.testing.assert_allclose(out, [[0, 0, 1.4], [0, 0.45, 0.6]])
    gx, gt = vjp(jnp.ones_like(x))
    np.testing.assert_allclose(gx, [[0, 0, 1], [0, 1, 1]])
    # d/dthr = -(thr/bw) * sum_b [|x - thr| < bw/2]
    # col0: |0.9-1|<.25 yes, |0.1-1| no -> -2; col1: |.2-.3| yes, |.45-.3| yes -> -0.6*2
    # col2: |1.4-.5| no, |.6-.5| yes -> -1
    np.testing.assert_allclose(gt, [-2.0, -1.2, -1.0], rtol=1e-6)
    _, vjp = jax.vjp(lambda a, t: jumprelu.step(a, t, bw), x, thr)
    gx, gt = vjp(jnp.ones_like(x))
    assert not np.asarray(gx).any()
    np.testing.assert_allclose(gt, [-2.0, -4.0, -2.0], rtol=1e-6)


def test_topk_auxk_is_zero_without_dead_features(x):
    arch = sae.get("topk")
    p = arch.init(jax.random.key(5), D, F, k=4)
    hp = {"k": jnp.int32(4), "auxk_alpha": jnp.float32(1.0)}
    ctx = StepContext(jnp.int32(0), jnp.float32(1), jnp.zeros(F, bool), k_max=4)
    loss, aux = arch.loss(p, x, hp, ctx)
    assert float(aux.parts["auxk"]) == 0.0 and float(loss) == float(aux.parts["recon"])
    ctx = ctx._replace(dead=jnp.ones(F, bool))
    _, aux = arch.loss(p, x, hp, ctx)
    assert float(aux.parts["auxk"]) > 0


def test_unknown_architecture_is_refused():
    with pytest.raises(InputError, match="unknown SAE architecture 'gated'"):
        sae.get("gated")


def test_jumprelu_inference_is_relu_of_the_jump_as_the_reference():
    """With a negative threshold, pre-activations in (threshold, 0) pass the jump but not the ReLU
    (reference JumpReLUSAE.encode: ReLU(pre * (pre > threshold)))."""

    rng = np.random.default_rng(0)
    d, F = 6, 10
    params = {"W_enc": rng.standard_normal((d, F)).astype(np.float32),
              "b_enc": rng.standard_normal(F).astype(np.float32),
              "W_dec": rng.standard_normal((F, d)).astype(np.float32),
              "b_dec": np.zeros(d, np.float32),
              "threshold": np.full(F, -0.5, np.float32),
              "scale": rng.uniform(0.5, 2, F).astype(np.float32)}
    x = rng.standard_normal((32, d)).astype(np.float32)
    pre = x @ params["W_enc"] + params["b_enc"]
    expected = np.maximum(pre * (pre > -0.5), 0) * params["scale"]
    got = np.asarray(sae.get("jumprelu").encode(params, x))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert (got >= 0).all() and ((pre > -0.5) & (pre < 0)).any()


def test_neuron_baseline_arch_is_the_clipped_identity(x):
    p = sae.get("neuron").init(jax.random.key(0), D, D)
    np.testing.assert_array_equal(np.asarray(p["W_enc"]), np.eye(D))
    f = np.asarray(sae.encode("neuron", p, 3 * x))
    np.testing.assert_allclose(f, np.clip(3 * x, 0, 1), rtol=1e-6)
    with pytest.raises(ValueError, match="one feature per neuron"):
        sae.get("neuron").init(jax.random.key(0), D, 2 * D)
