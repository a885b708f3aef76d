"""Feature normalization over a store and the neuron baseline, checked with NumPy."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("interplm_jax.sae", reason="needs the JAX SAE architectures (issue 3)")

from _saes import np_encode_raw, random_sae  # noqa: E402
from interplm_jax.normalize import (  # noqa: E402
    feature_stats, neuron_baseline, normalize, row_chunks, scale_from_max, write_feature_stats,
)
from interplm_jax.sae_dir import load_sae, save_sae  # noqa: E402
from interplm_jax.store import write_store  # noqa: E402

D, LAYER = 8, 2


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    rng = np.random.default_rng(7)
    lengths = rng.integers(3, 40, size=37)
    acts = [rng.normal(size=(n, D)).astype(np.float32) * rng.uniform(0.5, 2.0) for n in lengths]
    ids = [f"P{i:04d}" for i in range(len(acts))]
    return write_store(tmp_path_factory.mktemp("store") / "s", ids, {LAYER: acts}, shard_size=10)


def _all_rows(store, proteins=None):
    if proteins is None:
        return store.rows(LAYER, 0, store.n_tokens)
    return np.concatenate([store.protein(int(p), LAYER) for p in proteins])


@pytest.mark.parametrize("arch", ["relu", "topk", "batchtopk", "jumprelu"])
def test_normalized_max_is_one_for_every_live_feature(store, arch):
    sae = random_sae(arch, d=D, F=24, normalized=False)
    sae.params["b_enc"][:2] = -100.0  # two features that never fire
    normalized, stats = normalize(sae, store, LAYER, chunk_tokens=50)
    raw = np_encode_raw(sae, _all_rows(store).astype(np.float64))
    np.testing.assert_allclose(stats.max, raw.max(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(stats.n_active, (raw > 0).sum(0))
    live = raw.max(0) > 0
    assert live.sum() >= 12 and not live[:2].any()
    normed = raw * normalized.params["scale"]
    np.testing.assert_allclose(normed.max(0)[live], 1.0, rtol=1e-6)
    assert np.all(normed >= 0) and np.all(np.isfinite(normalized.params["scale"]))
    np.testing.assert_array_equal(stats.dead, np.flatnonzero(~live))
    assert np.all(normalized.params["scale"][~live] == 0)
    assert stats.n_tokens == store.n_tokens and stats.n_proteins == store.n_proteins
    # other parameters untouched
    for k, v in sae.params.items():
        if k != "scale":
            np.testing.assert_array_equal(normalized.params[k], v)


def test_chunking_and_protein_subset(store):
    sae = random_sae("relu", d=D, F=16, normalized=False)
    a = feature_stats("relu", sae.params, row_chunks(store, LAYER, 7))
    b = feature_stats("relu", sae.params, row_chunks(store, LAYER, 100_000))
    np.testing.assert_allclose(a.max, b.max, rtol=1e-6)
    np.testing.assert_array_equal(a.n_active, b.n_active)
    subset = [0, 1, 2, 5, 9, 10, 11, 30]
    _, stats = normalize(sae, store, LAYER, chunk_tokens=13, proteins=subset)
    raw = np_encode_raw(sae, _all_rows(store, subset).astype(np.float64))
    np.testing.assert_allclose(stats.max, raw.max(0), rtol=1e-5, atol=1e-6)
    assert stats.n_tokens == len(raw) and stats.n_proteins == len(subset)
    # a first chunk shorter than later ones (a short protein run first)
    lengths = store.lengths()
    short, long_ = int(np.argmin(lengths)), int(np.argmax(lengths))
    chunks = [store.protein(short, LAYER), store.protein(long_, LAYER)]
    got = feature_stats("relu", sae.params, iter(chunks))
    raw = np_encode_raw(sae, np.concatenate(chunks).astype(np.float64))
    np.testing.assert_allclose(got.max, raw.max(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got.n_active, (raw > 0).sum(0))


def test_stacked_sweep_equals_one_by_one(store):
    saes = [random_sae("topk", d=D, F=16, seed=s, normalized=False) for s in range(3)]
    stacked = {k: np.stack([s.params[k] for s in saes]) for k in saes[0].params}
    together = feature_stats("topk", stacked, row_chunks(store, LAYER, 64), stacked=True)
    for g, s in enumerate(saes):
        alone = feature_stats("topk", s.params, row_chunks(store, LAYER, 64))
        np.testing.assert_allclose(together.max[g], alone.max, rtol=1e-6)
        np.testing.assert_array_equal(together.n_active[g], alone.n_active)


def test_scale_from_max_handles_zero():
    np.testing.assert_array_equal(scale_from_max(np.array([2.0, 0.0, 0.5])), [0.5, 0.0, 2.0])


def test_neuron_baseline_min_max_scaled(store):
    sae, bounds = neuron_baseline(store, LAYER, chunk_tokens=33)
    x = _all_rows(store).astype(np.float64)
    np.testing.assert_allclose(bounds["min"], x.min(0), rtol=1e-6)
    np.testing.assert_allclose(bounds["max"], x.max(0), rtol=1e-6)
    f = np_encode_raw(sae, x) * sae.params["scale"]
    np.testing.assert_allclose(f, (x - x.min(0)) / (x.max(0) - x.min(0)), atol=1e-5)
    np.testing.assert_allclose(f.min(0), 0.0, atol=1e-6)
    np.testing.assert_allclose(f.max(0), 1.0, rtol=1e-5)
    # below the set's minimum: clipped to 0
    assert np.all(np_encode_raw(sae, x.min(0, keepdims=True) - 5.0) == 0)
    assert sae.meta["baseline"] == "neuron" and sae.n_features == D


def test_feature_stats_files(store, tmp_path):
    sae = random_sae("relu", d=D, F=16, normalized=False)
    normalized, stats = normalize(sae, store, LAYER)
    save_sae(tmp_path, normalized)
    write_feature_stats(tmp_path, stats)
    np.testing.assert_array_equal(np.load(tmp_path / "feature_stats" / "max.npy"), stats.max)
    summary = json.loads((tmp_path / "feature_stats" / "summary.json").read_text())
    assert summary["n_dead"] == len(stats.dead) and summary["n_tokens"] == store.n_tokens
    np.testing.assert_array_equal(load_sae(tmp_path).params["scale"], normalized.params["scale"])
