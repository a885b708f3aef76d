"""Layers trained together (one loop, each batch read once for all layers) == the layers one after
the other."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from train_streams import toy_activations

from interplm_jax.data import TokenStream
from interplm_jax.errors import InputError
from interplm_jax.normalize import normalize_sweep
from interplm_jax.store import ActivationStore, write_store
from interplm_jax.sweep_saes import read_sweep
from interplm_jax.train import TrainConfig
from interplm_jax.train.run import train_layers
from interplm_jax.train.together import layer_groups, stacked_bytes, step_bytes, train_together

LAYERS = (2, 5, 7)
D, B = 16, 64


def config(**kw) -> TrainConfig:
    base = dict(steps=12, batch_size=B, d_sae=32, grid={"lr": [1e-3, 1e-2]}, log_every=4,
                checkpoint_every=4, resample_steps=6, preflight="off", layers=LAYERS)
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    data = toy_activations(n=1500, d=D, seed=5)
    cuts = np.sort(np.random.default_rng(0).choice(np.arange(1, 1500), size=29, replace=False))
    proteins = np.split(data, cuts)
    ids = [f"P{i:05d}" for i in range(len(proteins))]
    acts = {2: proteins, 5: [p * 2 + 1 for p in proteins], 7: [np.tanh(p) for p in proteins]}
    return write_store(tmp_path_factory.mktemp("store") / "store", ids, acts, shard_size=10)


@pytest.fixture(scope="module")
def together(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("together")
    return out, train_layers(config(layers_together="on"), store.url, out)


@pytest.fixture(scope="module")
def sequential(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("sequential")
    return out, train_layers(config(layers_together="off"), store.url, out)


def metric_values(path: Path) -> tuple[list, np.ndarray]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    keys = [(r["step"], r["tokens"], r["sae"]) for r in rows]
    values = np.array([[v for k, v in sorted(r.items()) if k not in ("step", "tokens", "sae")]
                       for r in rows])
    return keys, values


def test_stream_of_several_layers_stacks_each_layers_stream(store):
    acts = ActivationStore.open(store.url)
    several = iter(TokenStream(acts, LAYERS, batch_size=B, seed=3))
    singles = [iter(TokenStream(acts, L, batch_size=B, seed=3)) for L in LAYERS]
    for _ in range(30):  # more than an epoch (22 batches)
        batch = next(several)
        assert batch.shape == (len(LAYERS), B, D)
        for i, single in enumerate(singles):
            np.testing.assert_array_equal(batch[i], next(single))


def test_together_equals_one_layer_after_the_other(together, sequential):
    (out_t, res_t), (out_s, res_s) = together, sequential
    for layer in LAYERS:
        assert res_t[layer].step == res_s[layer].step == 12
        for k, v in res_s[layer].params.items():  # (the same compiled step on the same batches)
            np.testing.assert_array_equal(res_t[layer].params[k], v, err_msg=k)
        keys_t, values_t = metric_values(out_t / f"layer_{layer}" / "metrics.jsonl")
        keys_s, values_s = metric_values(out_s / f"layer_{layer}" / "metrics.jsonl")
        assert keys_t == keys_s and len(keys_t) == 3 * 2  # steps 4, 8, 12 x 2 SAEs
        np.testing.assert_array_equal(values_t, values_s)
    # the layers saw different data: their SAEs differ
    assert not np.allclose(res_t[2].params["W_dec"], res_t[5].params["W_dec"])


def test_layer_directories_read_back_and_normalize(together, store):
    out, res = together
    acts = ActivationStore.open(store.url)
    for layer in (2, 7):
        saes = read_sweep(out / f"layer_{layer}")
        assert sorted(saes) == [r["id"] for r in res[layer].grid]
        for g, sae in enumerate(saes.values()):
            np.testing.assert_array_equal(sae.params["W_enc"], res[layer].params["W_enc"][g])
    written = normalize_sweep(out / "layer_5", acts)
    assert len(written) == 2 and all((d / "feature_stats").exists() for _, d in written.values())


class _Dying:
    """A stream that raises after ``at`` batches (a run killed mid-way)."""

    def __init__(self, stream, at: int):
        self.stream, self.at = stream, at

    @property
    def position(self):
        return self.stream.position

    def __iter__(self):
        for i, batch in enumerate(self.stream):
            if i == self.at:
                raise KeyboardInterrupt
            yield batch


def test_killed_and_resumed_is_bit_identical(together, store, tmp_path):
    out_t, res_t = together
    acts = ActivationStore.open(store.url)
    cfg = config(layers_together="on")
    outs = {layer: tmp_path / f"layer_{layer}" for layer in LAYERS}

    def stream(dies_at=None):
        def make(host_index, host_count, position):
            s = TokenStream(acts, LAYERS, batch_size=B, seed=cfg.seed, position=position)
            return s if dies_at is None else _Dying(s, dies_at)
        return make

    with pytest.raises(KeyboardInterrupt):
        train_together(cfg, LAYERS, stream(dies_at=10), D, outs)
    with pytest.raises(InputError, match="--resume"):
        train_together(cfg, LAYERS, stream(), D, outs)
    resumed = train_together(cfg, LAYERS, stream(), D, outs, resume=True)
    for layer in LAYERS:
        for k, v in res_t[layer].params.items():
            np.testing.assert_array_equal(resumed[layer].params[k], v, err_msg=k)
        assert ((outs[layer] / "metrics.jsonl").read_text()
                == (out_t / f"layer_{layer}" / "metrics.jsonl").read_text())


def test_a_layer_behind_the_others_resumes_from_their_common_step(together, store, tmp_path):
    """Killed between saving one layer's checkpoint and the next one's: the newer one is set
    aside and all layers resume from the step they share."""
    out_t, res_t = together
    acts = ActivationStore.open(store.url)
    cfg = config(layers_together="on")
    outs = {layer: tmp_path / f"layer_{layer}" for layer in LAYERS}

    def make(host_index, host_count, position):
        return TokenStream(acts, LAYERS, batch_size=B, seed=cfg.seed, position=position)

    train_together(cfg, LAYERS, make, D, outs)
    ahead = outs[5] / "checkpoints"
    (ahead / "12").rename(tmp_path / "kept")  # layers 2 and 7 are at 12, layer 5 at 8
    resumed = train_together(cfg, LAYERS, make, D, outs, resume=True)
    assert sorted(p.name for p in (outs[2] / "checkpoints").iterdir() if p.name.startswith("12"))\
        == ["12", "12.unreadable"]
    for layer in LAYERS:
        np.testing.assert_array_equal(resumed[layer].params["W_dec"], res_t[layer].params["W_dec"])


def test_groups_split_to_fit_the_memory_budget(store, caplog):
    cfg = config(layers_together="auto")
    assert layer_groups(config(layers_together="off"), LAYERS, D) == [(2,), (5,), (7,)]
    assert layer_groups(config(layers_together="on", memory_budget_gb=1e-9), LAYERS, D) == [LAYERS]
    assert layer_groups(cfg, LAYERS, D) == [LAYERS]  # a tiny grid fits the machine
    step, state = step_bytes(cfg, D)
    assert 0 < state < step  # (a step holds the state, the batch and its temporaries)
    assert stacked_bytes(cfg, 3, D) == step + 2 * state
    # room for two layers' states and one step: two groups, as even as they go
    budget = lambda n: config(layers_together="auto", memory_budget_gb=n / 2**30)  # noqa: E731
    with caplog.at_level(logging.WARNING):
        assert layer_groups(budget(step + state), LAYERS, D) == [(2, 5), (7,)]
    assert "2 groups" in caplog.text and "memory_budget_gb" in caplog.text
    assert layer_groups(budget(step + state - 1), LAYERS, D) == [(2,), (5,), (7,)]
    # not even one layer fits: one at a time
    assert layer_groups(budget(step // 10), LAYERS, D) == [(2,), (5,), (7,)]


def test_train_layers_in_groups_equals_together(store, together, tmp_path):
    out_t, res_t = together
    res = train_layers(config(layers_together="auto", memory_budget_gb=1e-9, layers=(2, 5)), store.url, tmp_path)
    for layer in (2, 5):
        np.testing.assert_allclose(res[layer].params["W_dec"], res_t[layer].params["W_dec"],
                                   rtol=1e-5, atol=1e-6)


def test_together_on_the_sae_axis_equals_one_after_the_other(store, sequential, tmp_path):
    out_s, res_s = sequential
    res = train_layers(config(layers_together="on", mesh_sae=2, mesh_data=1, layers=(5, 7)),
                       store.url, tmp_path)
    for layer in (5, 7):
        for k, v in res_s[layer].params.items():
            np.testing.assert_allclose(res[layer].params[k], v, rtol=1e-5, atol=1e-6, err_msg=k)


def test_resume_of_a_run_stopped_after_its_first_layer(store, sequential, tmp_path):
    """A one-after-the-other run killed after layer 2, resumed with the layers together: layer 2
    is read back, 5 and 7 train together from step 0."""
    out_s, res_s = sequential
    train_layers(config(layers_together="off", layers=(2,)), store.url, tmp_path)
    res = train_layers(config(layers_together="on"), store.url, tmp_path, resume=True)
    for layer in LAYERS:
        np.testing.assert_allclose(res[layer].params["W_enc"], res_s[layer].params["W_enc"],
                                   rtol=1e-5, atol=1e-6)
