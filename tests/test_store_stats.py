"""Activation statistics streamed into the store (interplm_jax/store/stats.py) against NumPy."""

import numpy as np
import pytest
import tensorstore as ts

from interplm_jax.errors import StoreError
from interplm_jax.store import ActivationStore, StoreWriter, write_store
from interplm_jax.store.stats import (NORM_EDGES, Moments, compute_stats, layer_key, load_stats,
                                      shard_key, store_stats)

D = 24
OUTLIER = 7


def planted(n_proteins=23, seed=0, outlier_scale=40.0, mean_shift=3.0):
    """Per-protein activations with a common mean and one dimension of huge variance."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 60, size=n_proteins)
    scale = np.ones(D)
    scale[OUTLIER] = outlier_scale
    mean = mean_shift * rng.normal(size=D)
    acts = [(mean + rng.normal(size=(n, D)) * scale).astype(np.float32) for n in lengths]
    return [f"p{i}" for i in range(n_proteins)], acts


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    ids, acts = planted()
    return write_store(tmp_path_factory.mktemp("s") / "store", ids, {3: acts, 5: [2 * a for a in acts]},
                       shard_size=5)


def test_statistics_equal_numpy_over_the_stored_rows(store):
    for L in store.layers:
        s = load_stats(store, L)
        x = store.rows(L, 0, store.n_tokens).astype(np.float64)
        norms = np.linalg.norm(x, axis=1)
        assert s.n_tokens == store.n_tokens
        np.testing.assert_allclose(s.mean, x.mean(0), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(s.var, x.var(0), rtol=1e-6)  # float32 element-wise work
        np.testing.assert_array_equal(s.absmax, np.abs(x).max(0))
        assert s.norm_mean == pytest.approx(norms.mean(), rel=1e-6)
        assert s.norm_max == pytest.approx(norms.max(), rel=1e-6)
        expected = [int(((norms >= lo) & (norms < hi)).sum()) for lo, hi in zip(NORM_EDGES, NORM_EDGES[1:])]
        np.testing.assert_array_equal(s.norm_counts, expected)
        assert s.mean_norm_ratio == pytest.approx(np.linalg.norm(x.mean(0)) / norms.mean(), rel=1e-6)


def test_planted_outlier_dimension_is_found_and_iid_data_has_none(store, tmp_path):
    s = load_stats(store, 3)
    assert s.outliers() == {"var": [OUTLIER], "absmax": [OUTLIER]}
    assert s.summary()["outliers_var"] == [OUTLIER]
    assert s.summary()["outlier_var_ratio"][0] > 500
    assert f"outlier dimensions by variance: {OUTLIER} (" in s.describe()
    ids, acts = planted(outlier_scale=1.0, mean_shift=0.0)
    clean = write_store(tmp_path / "clean", ids, {1: acts})
    assert load_stats(clean, 1).outliers() == {"var": [], "absmax": []}
    assert load_stats(clean, 1).mean_norm_ratio < 0.1


def test_merging_is_exact_up_to_rounding_whatever_the_split():
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(10_000, 8)) * 5 + 100).astype(np.float32)
    whole = Moments.of_rows(x)
    parts = Moments.empty(8)
    for a, b in ((0, 1), (1, 4097), (4097, 9000), (9000, 10_000)):
        parts = parts.merge(Moments.of_rows(x[a:b]))
    np.testing.assert_allclose(parts.mean, whole.mean, rtol=1e-14)
    np.testing.assert_allclose(parts.m2, whole.m2, rtol=1e-6)
    np.testing.assert_allclose(parts.m2 / 10_000, x.astype(np.float64).var(0), rtol=1e-6)
    np.testing.assert_array_equal(parts.norm_counts, whole.norm_counts)


def test_recomputed_statistics_equal_the_streamed_ones(store, tmp_path):
    ids, acts = planted()
    again = write_store(tmp_path / "again", ids, {3: acts, 5: [2 * a for a in acts]}, shard_size=5)
    streamed = again.objects.read(layer_key(3))
    again.objects.kv.delete_range(ts.KvStore.KeyRange("stats/", "stats/\xff")).result()
    assert load_stats(again, 3) is None
    computed = store_stats(again, 3)  # computed from the rows and written
    assert again.objects.read(layer_key(3)) == streamed
    np.testing.assert_array_equal(computed.var, load_stats(store, 3).var)
    assert compute_stats(again)[5].n_tokens == store.n_tokens


def test_workers_in_any_order_give_the_same_statistics_bytes(tmp_path, store):
    ids, acts = planted()
    lengths = [len(a) for a in acts]
    writer = StoreWriter.open(tmp_path / "rev", ids, lengths, [3, 5], D, {"name": "in-memory"}, shard_size=5)
    for shard in reversed(writer.pending_shards()):
        writer.write_shard(shard, {3: np.concatenate(acts[shard.protein_start:shard.protein_stop]),
                                   5: 2 * np.concatenate(acts[shard.protein_start:shard.protein_stop])})
    assert writer.finalize()
    rev = ActivationStore.open(tmp_path / "rev")
    for L in (3, 5):
        assert rev.objects.read(layer_key(L)) == store.objects.read(layer_key(L))


def test_damaged_or_missing_statistics(store, tmp_path):
    ids, acts = planted()
    s = write_store(tmp_path / "dam", ids, {3: acts}, shard_size=5)
    s.objects.write(layer_key(3), b"{not json")
    with pytest.raises(StoreError, match=r"stats/layer_3.json: damaged statistics file"):
        load_stats(s, 3)
    with pytest.raises(StoreError, match=r"layer 4 not stored"):
        load_stats(s, 4)
    assert s.objects.read(shard_key(0)) is not None


def test_inspect_store_shows_statistics_and_computes_missing_ones(store, tmp_path):
    from pathlib import Path

    from click.testing import CliRunner

    from interplm_jax.cli import load_script

    inspect = load_script(Path(__file__).resolve().parents[1] / "scripts" / "inspect_store.py").main
    r = CliRunner().invoke(inspect, [store.url])
    assert r.exit_code == 0, r.output
    s = load_stats(store, 3)
    assert f"layer 3: {store.n_tokens} tokens; token norm mean {s.norm_mean:.4g}" in r.output
    assert f"outlier dimensions by variance: {OUTLIER} (" in r.output
    ids, acts = planted()
    old = write_store(tmp_path / "old", ids, {3: acts}, shard_size=5)
    old.objects.kv.delete_range(ts.KvStore.KeyRange("stats/", "stats/\xff")).result()
    r = CliRunner().invoke(inspect, [old.url])
    assert r.exit_code == 0 and "layer 3: no activation statistics" in r.output
    r = CliRunner().invoke(inspect, [old.url, "--compute-stats"])
    assert r.exit_code == 0 and f"layer 3: {old.n_tokens} tokens" in r.output
    np.testing.assert_array_equal(load_stats(old, 3).var, s.var)
