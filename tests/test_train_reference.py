"""Parity with InterPLM's torch trainers: same initial parameters, same batches, several steps.

Skipped when ../shared/reference/InterPLM is absent.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import torch_to_params, trainers as reference
from train_streams import toy_activations

from interplm_jax.train.config import TrainConfig, build_grid, grid_arrays
from interplm_jax.train.step import TrainState, make_step
from interplm_jax.train.sweep import make_spec

D, F, B, STEPS = 16, 64, 64, 8


@pytest.fixture(scope="module")
def batches():
    data = toy_activations(n=B * STEPS, d=D, seed=3)
    return [data[i * B:(i + 1) * B] for i in range(STEPS)]


def run_ours(cfg: TrainConfig, params: dict, batches):
    """Train one SAE starting from ``params``; return per-step losses and final params."""
    grid = build_grid(cfg)
    spec = make_spec(cfg, grid)
    hp = grid_arrays(grid, ("lr", "seed") + spec.arch.hparams)
    # the state built around the given parameters (no compiled init needed)
    train = {k: jnp.asarray(params[k]) for k in spec.arch.trainable}
    opt_state = jax.tree.map(lambda a: a[None], spec.optimizer(0.0).init(train))
    state = TrainState(
        step=jnp.zeros((), jnp.int32), params={k: jnp.asarray(v)[None] for k, v in params.items()},
        opt_state=opt_state, since_fired=jnp.zeros((1, F), jnp.int32),
        key=jax.random.PRNGKey(0)[None], ok=jnp.ones((1,), bool), bad_step=-jnp.ones((1,), jnp.int32))
    step = jax.jit(make_step(spec))
    losses, metrics = [], []
    for x in batches:
        state, m = step(state, hp, jnp.asarray(x))
        # decoder rows stay unit norm after every step
        np.testing.assert_allclose(np.linalg.norm(state.params["W_dec"][0], axis=-1), 1, atol=2e-6)
        losses.append(float(m["loss"][0]))
        metrics.append({k: float(v[0]) for k, v in m.items()})
    run_ours.metrics = metrics
    return losses, jax.tree.map(lambda a: np.asarray(a[0]), state.params)


def run_reference(trainer, batches):
    import torch

    torch.set_num_threads(1)
    losses = [trainer.update(s, torch.from_numpy(x)) for s, x in enumerate(batches)]
    return losses


def assert_same(ours_losses, ref_losses, ours_params, ref_params, keys):
    np.testing.assert_allclose(ours_losses, ref_losses, rtol=1e-6 * 5, atol=1e-7)
    for k in keys:
        np.testing.assert_allclose(ours_params[k], ref_params[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_relu_trainer_matches_reference(batches):
    ref = reference()
    import torch

    torch.manual_seed(0)
    rcfg = ref.relu.ReLUTrainerConfig(
        activation_dim=D, dictionary_size=F, lr=1e-3, steps=STEPS, warmup_steps=2,
        decay_start=5, l1_penalty=0.05, l1_penalty_warmup_steps=3)
    trainer = ref.relu.ReLUTrainer(rcfg)
    init = torch_to_params(trainer.ae, "relu")
    ref_losses = run_reference(trainer, batches)
    cfg = TrainConfig(arch="relu", steps=STEPS, batch_size=B, warmup_steps=2, decay_start=5,
                      sparsity_warmup_steps=3, hparams={"lr": 1e-3, "l1": 0.05})
    losses, params = run_ours(cfg, init, batches)
    assert_same(losses, ref_losses, params, torch_to_params(trainer.ae, "relu"),
                ("b_pre", "W_enc", "b_enc", "W_dec"))
    # the parameters moved: the comparison is not between two untouched copies
    assert np.abs(params["W_enc"] - init["W_enc"]).max() > 1e-4


@pytest.mark.parametrize("arch, decoder", [("topk", "dense"), ("topk", "sparse"),
                                           ("batchtopk", "dense")])
def test_topk_trainers_match_reference(batches, arch, decoder):
    ref = reference()
    import torch

    torch.manual_seed(1)
    common = dict(activation_dim=D, dictionary_size=F, expansion_factor=F // D, lr=1e-3,
                  steps=STEPS, warmup_steps=1, decay_start=6, k=4, threshold_start_step=2)
    if arch == "topk":
        trainer = ref.top_k.TopKTrainer(ref.top_k.TopKTrainerConfig(**common))
    else:
        trainer = ref.batch_top_k.BatchTopKTrainer(ref.batch_top_k.BatchTopKTrainerConfig(
            **common, dead_feature_threshold=2 * B))
    trainer.dead_feature_threshold = 2 * B  # AuxK exercised after two silent steps
    init = torch_to_params(trainer.ae, arch)
    ref_losses = run_reference(trainer, batches)
    cfg = TrainConfig(arch=arch, steps=STEPS, batch_size=B, warmup_steps=1, decay_start=6,
                      dead_tokens=2 * B, decoder=decoder,
                      hparams={"lr": 1e-3, "k": 4, "threshold_start_step": 2})
    losses, params = run_ours(cfg, init, batches)
    got = torch_to_params(trainer.ae, arch)
    assert_same(losses, ref_losses, params, got, ("b_pre", "W_enc", "b_enc", "W_dec"))
    np.testing.assert_allclose(params["threshold"], got["threshold"], rtol=1e-5)
    assert float(got["threshold"]) > 0
    assert max(m["auxk"] for m in run_ours.metrics) > 0  # the AuxK loss took part


def test_jumprelu_trainer_matches_reference(batches):
    ref = reference()
    import torch

    torch.manual_seed(2)
    rcfg = ref.jump_relu.JumpReLUTrainerConfig(
        activation_dim=D, dictionary_size=F, lr=1e-3, steps=STEPS, warmup_steps=1,
        decay_start=6, sparsity_warmup_steps=3, bandwidth=0.5, target_l0=5.0,
        sparsity_penalty=1.0)
    trainer = ref.jump_relu.JumpReLUTrainer(rcfg)
    init = torch_to_params(trainer.ae, "jumprelu")
    ref_losses = run_reference(trainer, batches)
    cfg = TrainConfig(arch="jumprelu", steps=STEPS, batch_size=B, warmup_steps=1, decay_start=6,
                      sparsity_warmup_steps=3,
                      hparams={"lr": 1e-3, "bandwidth": 0.5, "target_l0": 5.0,
                               "sparsity_penalty": 1.0})
    losses, params = run_ours(cfg, init, batches)
    got = torch_to_params(trainer.ae, "jumprelu")
    assert_same(losses, ref_losses, params, got, ("W_enc", "b_enc", "W_dec", "b_dec", "threshold"))
    # the straight-through estimator moved the thresholds
    assert np.abs(params["threshold"] - init["threshold"]).max() > 1e-5
