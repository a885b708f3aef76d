"""The fused optimizer transform equals the optax chain it stands for (every architecture's
variant: clip before or after the projection, eps, Adam b1), over several steps, with the clip
active and inactive, and keeps the chain's state layout."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from interplm_jax.sae import ARCHITECTURES
from interplm_jax.train.schedules import lr_factor
from interplm_jax.train.transforms import fused_sae_optimizer, sae_optimizer

D, F = 6, 16


def params_and_grads(seed: int, grad_scale: float):
    rng = np.random.default_rng(seed)
    w_dec = rng.normal(size=(F, D))
    w_dec /= np.linalg.norm(w_dec, axis=1, keepdims=True)
    p = {"W_dec": w_dec, "W_enc": rng.normal(size=(D, F)) * 0.3,
         "b_enc": rng.normal(size=F) * 0.1, "b_pre": rng.normal(size=D)}
    grads = [{k: rng.normal(size=v.shape) * grad_scale for k, v in p.items()} for _ in range(4)]
    as32 = lambda t: {k: jnp.asarray(v, jnp.float32) for k, v in t.items()}  # noqa: E731
    return as32(p), [as32(g) for g in grads]


def run(tx, params, grads):
    state = tx.init(params)
    for g in grads:
        updates, state = tx.update(g, state, params)
        params = optax.apply_updates(params, updates)
    return params, state


@pytest.mark.parametrize("arch", ["relu", "topk", "jumprelu"])
@pytest.mark.parametrize("grad_scale", [1e-3, 3.0])  # global norm below / above the clip
def test_fused_optimizer_equals_the_chain(arch, grad_scale):
    a = ARCHITECTURES[arch]
    sched = lr_factor(10, 2, 5)
    p0, grads = params_and_grads(7, grad_scale)
    fused = jax.jit(lambda p, g: run(fused_sae_optimizer(a, 3e-2, sched), p, g))
    chain = jax.jit(lambda p, g: run(sae_optimizer(a, 3e-2, sched), p, g))
    pf, sf = fused(p0, grads)
    pc, sc = chain(p0, grads)
    assert jax.tree.structure(sf) == jax.tree.structure(sc)  # checkpoints interchangeable
    assert isinstance(sf[2], optax.ScaleByAdamState) and int(sf[2].count) == len(grads)
    for k in p0:
        np.testing.assert_allclose(pf[k], pc[k], rtol=1e-5, atol=1e-6, err_msg=k)
        np.testing.assert_allclose(sf[2].mu[k], sc[2].mu[k], rtol=1e-5, atol=1e-7, err_msg=k)
        np.testing.assert_allclose(sf[2].nu[k], sc[2].nu[k], rtol=1e-5, atol=1e-9, err_msg=k)
    assert int(sf[3].count) == int(sc[3].count) == len(grads)
    # the parameters moved, decoder rows stay unit norm
    assert float(jnp.abs(pf["W_enc"] - p0["W_enc"]).max()) > 1e-4
    np.testing.assert_allclose(np.linalg.norm(pf["W_dec"], axis=1), 1.0, atol=1e-5)


def test_fused_optimizer_needs_params():
    tx = fused_sae_optimizer(ARCHITECTURES["relu"], 1e-3, lambda c: 1.0)
    p, grads = params_and_grads(0, 1.0)
    with pytest.raises(ValueError, match="needs params"):
        tx.update(grads[0], tx.init(p))
