"""The store contract: layout, reader API, and clear errors for broken stores."""

import json
import shutil
import time

import numpy as np
import pytest

from interplm_jax.errors import InputError, StoreError
from interplm_jax.store import ActivationStore, StoreWriter, kvstore_url, plan_shards, write_store


def make(path, n=23, d=6, layers=(1, 3), shard_size=5, seed=0, dtype="float32"):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 40, size=n)
    ids = [f"P{i:05d}" for i in range(n)]
    acts = {L: [rng.standard_normal((k, d)).astype(np.float32) for k in lengths] for L in layers}
    return write_store(path, ids, acts, shard_size=shard_size, dtype=dtype), ids, acts


def test_reader_api_matches_the_input(tmp_path):
    store, ids, acts = make(tmp_path / "s")
    assert store.protein_ids == ids and store.layers == (1, 3) and store.d_model == 6
    assert store.n_shards == 5 and store.shard_bounds(4)[:2] == (20, 23)
    for L in (1, 3):
        flat = np.concatenate(acts[L])
        np.testing.assert_array_equal(store.rows(L, 0, store.n_tokens), flat)
        np.testing.assert_array_equal(store.rows(L, 17, 90), flat[17:90])
        for i in (0, 7, 22):
            np.testing.assert_array_equal(store.protein(i, L), acts[L][i])
            np.testing.assert_array_equal(store.protein(ids[i], L), acts[L][i])
    np.testing.assert_array_equal(store.lengths(), [len(a) for a in acts[1]])
    m = store.manifest
    assert m["complete"] and all(s["complete"] for s in m["shards"])
    assert m["n_tokens"] == store.offsets[-1] == sum(len(a) for a in acts[1])


def test_layout_on_disk(tmp_path):
    make(tmp_path / "s")
    root = tmp_path / "s"
    assert (root / "proteins" / "ids.txt").read_text().splitlines()[0] == "P00000"
    assert json.loads((root / "layer_1" / "zarr.json").read_text())["shape"][1] == 6
    assert sorted(p.name for p in (root / "shards").iterdir()) == [f"{i:06d}.done" for i in range(5)]


def test_bfloat16_store(tmp_path):
    store, _, acts = make(tmp_path / "s", dtype="bfloat16")
    got = store.protein(3, 1)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, acts[1][3], rtol=1e-2, atol=1e-2)


def test_shard_plan_covers_all_rows():
    offsets = np.array([0, 3, 4, 10, 11, 20])
    shards = plan_shards(offsets, 2)
    assert [(s.protein_start, s.protein_stop, s.row_start, s.row_stop) for s in shards] == [
        (0, 2, 0, 4), (2, 4, 4, 11), (4, 5, 11, 20)]


def test_kvstore_urls(tmp_path):
    assert kvstore_url(tmp_path / "x") == f"file://{tmp_path}/x/"
    assert kvstore_url("gs://bucket/acts") == "gs://bucket/acts/"


def test_missing_and_foreign_stores(tmp_path):
    with pytest.raises(StoreError, match="not an activation store"):
        ActivationStore.open(tmp_path)
    make(tmp_path / "s")
    manifest = tmp_path / "s" / "manifest.json"
    m = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**m, "format_version": 99}))
    with pytest.raises(StoreError, match="format version 99"):
        ActivationStore.open(tmp_path / "s")
    manifest.write_text(json.dumps({**m, "format": "something-else"}))
    with pytest.raises(StoreError, match="manifest format is 'something-else'"):
        ActivationStore.open(tmp_path / "s")
    manifest.write_text("{not json")
    with pytest.raises(StoreError, match="manifest.json: not valid JSON"):
        ActivationStore.open(tmp_path / "s")


def test_incomplete_store(tmp_path):
    rng = np.random.default_rng(0)
    w = StoreWriter.open(tmp_path / "s", ["a", "b", "c"], [2, 3, 4], [1], 4, {"name": "m"}, shard_size=1)
    w.write_shard(w.shards[0], {1: rng.standard_normal((2, 4))})
    assert not w.finalize()
    with pytest.raises(StoreError, match="incomplete store, 1 of 3 shards written"):
        ActivationStore.open(tmp_path / "s")
    assert [s.index for s in w.pending_shards()] == [1, 2]
    assert [s.index for s in w.pending_shards(1, 2)] == [1]
    with pytest.raises(StoreError, match=r"shard 1 layer 1: got shape \(2, 4\), expected \(3, 4\)"):
        w.write_shard(w.shards[1], {1: rng.standard_normal((2, 4))})


@pytest.mark.parametrize("damage, message", [
    (lambda r, m: (r / "proteins" / "ids.txt").write_text("x\n"), "ids.txt has 1 ids"),
    (lambda r, m: shutil.rmtree(r / "layer_3"), "cannot open layer_3"),
    (lambda r, m: (r / "manifest.json").write_text(json.dumps({**m, "n_tokens": m["n_tokens"] + 1})),
     "proteins/offsets .* does not match"),
    (lambda r, m: (r / "manifest.json").write_text(json.dumps({**m, "d_model": 7})),
     r"layer_1 has shape \(\d+, 6\), manifest says \(\d+, 7\)"),
    (lambda r, m: (r / "manifest.json").write_text(json.dumps({**m, "dtype": "bfloat16"})),
     "layer_1 has dtype float32, manifest says bfloat16"),
])
def test_manifest_that_does_not_match_its_arrays(tmp_path, damage, message):
    make(tmp_path / "s")
    root = tmp_path / "s"
    damage(root, json.loads((root / "manifest.json").read_text()))
    with pytest.raises(StoreError, match=message):
        ActivationStore.open(root)


def test_reader_errors_name_what_is_missing(tmp_path):
    store, _, _ = make(tmp_path / "s")
    with pytest.raises(StoreError, match="no protein 'nope'"):
        store.protein("nope", 1)
    with pytest.raises(StoreError, match=r"layer 2 not stored \(layers: \[1, 3\]\)"):
        store.rows(2, 0, 1)
    with pytest.raises(IndexError):
        store.rows(1, 0, store.n_tokens + 1)


def test_ids_with_whitespace_are_refused(tmp_path):
    with pytest.raises(StoreError, match="contains whitespace"):
        StoreWriter.open(tmp_path / "s", ["a b"], [1], [1], 2, {"name": "m"})


def test_row_reads_of_protein_sets_match_numpy(tmp_path):
    store, _, acts = make(tmp_path / "s", n=23)
    flat, ends = np.concatenate(acts[3]), np.cumsum([0] + [len(a) for a in acts[3]])
    proteins = [0, 1, 2, 5, 9, 10, 22]
    assert store.row_runs(proteins) == [(0, ends[3]), (ends[5], ends[6]), (ends[9], ends[11]),
                                        (ends[22], ends[23])]
    assert store.row_runs() == [(0, store.n_tokens)]
    np.testing.assert_array_equal(store.protein_rows(3, proteins),
                                  np.concatenate([acts[3][p] for p in proteins]))
    rows = np.random.default_rng(1).permutation(store.n_tokens)[:50]
    for block_rows in (1, 7, 1 << 16):  # one row per read .. all at once: same values
        np.testing.assert_array_equal(store.take(3, rows, block_rows), flat[rows])
    with pytest.raises(InputError, match=r"protein indices must be in \[0, 23\)"):
        store.row_runs([3, 23])


def test_prefetch_loads_in_order_and_ahead_only_when_asked():
    from interplm_jax.store import prefetch

    loaded = []

    def load(i):
        loaded.append(i)
        return i * i

    it = prefetch(load, range(4))
    assert next(it) == 0
    deadline = time.monotonic() + 10
    while loaded != [0, 1] and time.monotonic() < deadline:  # item 1 loads while we hold item 0
        time.sleep(0.001)
    assert loaded == [0, 1]
    assert list(prefetch(load, [])) == []
    assert list(it) == [1, 4, 9] and loaded == [0, 1, 2, 3]
    loaded.clear()
    lazy = prefetch(load, range(3), ahead=False)
    assert next(lazy) == 0 and loaded == [0]  # the next load waits for the caller
    assert list(lazy) == [1, 4] and loaded == [0, 1, 2]
