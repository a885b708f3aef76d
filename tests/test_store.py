"""The store contract: layout, reader API, and clear errors for broken stores."""

import json
import shutil
import time
from pathlib import Path

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


def _sequences(lengths, seed):
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), size=n)) for n in lengths]


def test_resume_with_other_residues_under_the_same_ids_is_refused(tmp_path):
    """Same ids and lengths, other sequences: never resumed as stale (issue 13 item 1)."""
    ids, lengths = ["a", "b", "c", "d"], [3, 5, 2, 4]
    seqs = _sequences(lengths, 0)
    w = StoreWriter.open(tmp_path / "s", ids, lengths, [1], 4, {"name": "m"}, shard_size=2, sequences=seqs)
    w.write_shard(w.shards[0], {1: np.ones((8, 4))})
    # the same sequences resume; one residue changed in the second shard does not
    assert [s.index for s in StoreWriter.open(tmp_path / "s", ids, lengths, [1], 4, {"name": "m"},
                                              shard_size=2, sequences=seqs).pending_shards()] == [1]
    other = seqs[:3] + ["W" + seqs[3][1:] if seqs[3][0] != "W" else "A" + seqs[3][1:]]
    with pytest.raises(StoreError, match=r"shard 1 \(proteins 2..3, from 'c'\) holds other sequences"):
        StoreWriter.open(tmp_path / "s", ids, lengths, [1], 4, {"name": "m"}, shard_size=2, sequences=other)
    w.write_shard(w.shards[1], {1: np.ones((6, 4))})
    assert w.finalize()
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert all(s["complete"] and len(s["sequences_sha256"]) == 64 for s in manifest["shards"])
    with pytest.raises(StoreError, match="shard 1 .* holds other sequences"):  # complete: same
        StoreWriter.open(tmp_path / "s", ids, lengths, [1], 4, {"name": "m"}, shard_size=2, sequences=other)
    with pytest.raises(StoreError, match="sequences do not match the lengths"):
        StoreWriter.open(tmp_path / "t", ids, lengths, [1], 4, {"name": "m"}, sequences=seqs[::-1])


@pytest.mark.parametrize("shard_size", [0, -5])
def test_bad_shard_size_writes_nothing(tmp_path, shard_size):
    with pytest.raises(StoreError, match=f"shard size must be a positive integer, got {shard_size}"):
        StoreWriter.open(tmp_path / "s", ["a"], [3], [1], 4, {"name": "m"}, shard_size=shard_size)
    assert not (tmp_path / "s").exists()


def _chunked(tmp_path):
    """A store of 12 proteins in 4 shards, 16-row chunks, and its arrays as written."""
    rng = np.random.default_rng(3)
    lengths = rng.integers(3, 12, size=12)
    ids = [f"Q{i}" for i in range(12)]
    acts = {L: [rng.standard_normal((k, 5)).astype(np.float32) for k in lengths] for L in (1, 2)}
    store = write_store(tmp_path / "s", ids, acts, shard_size=3, chunk_rows=16)
    return store, ids, np.concatenate([[0], np.cumsum(lengths)])


def _shards_of_chunk(offsets, chunk, shard_size=3, chunk_rows=16):
    """Shards whose rows meet chunk ``chunk`` (plain arithmetic over the offsets)."""
    lo, hi = chunk * chunk_rows, (chunk + 1) * chunk_rows
    return sorted({p // shard_size for p in range(len(offsets) - 1) if offsets[p] < hi and offsets[p + 1] > lo})


@pytest.mark.parametrize("damage, problem", [
    ("flip", "Digest mismatch"),
    ("truncate", "Not enough data|Digest mismatch|DATA_LOSS"),
    ("delete", "missing"),
])
def test_damaged_chunk_is_named_by_readers_and_verify(tmp_path, damage, problem):
    """A flipped byte, a truncated or a deleted chunk: the read fails naming the layer and
    shard, and --verify lists exactly the shards that chunk holds (issue 13 items 2, 12)."""
    from interplm_jax.store.verify import verify_store

    store, ids, offsets = _chunked(tmp_path)
    assert verify_store(store) == []
    chunk = tmp_path / "s" / "layer_2" / "c" / "2" / "0"
    data = bytearray(chunk.read_bytes())
    if damage == "flip":
        data[20] ^= 0x10
        chunk.write_bytes(bytes(data))
    elif damage == "truncate":
        chunk.write_bytes(bytes(data[:len(data) // 2]))
    else:
        chunk.unlink()
    store = ActivationStore.open(tmp_path / "s")
    np.testing.assert_array_equal(store.rows(1, 0, store.n_tokens).shape, (offsets[-1], 5))  # layer 1 fine
    with pytest.raises(StoreError, match=rf"layer 2, rows 32..47 \(shard.* cannot be read \(.*({problem})"):
        store.rows(2, 32, 48)
    found = verify_store(store)
    assert {d.shard for d in found} == set(_shards_of_chunk(offsets, 2)) and {d.layer for d in found} == {2}
    s = found[0].shard
    assert str(found[0]).startswith(f"layer 2, shard {s} (proteins {3 * s}..{3 * s + 2}, rows {offsets[3 * s]}..")


def test_inspect_store_summary_and_verify(tmp_path):
    from click.testing import CliRunner

    from interplm_jax.cli import load_script

    store, ids, offsets = _chunked(tmp_path)
    inspect = load_script(Path(__file__).resolve().parents[1] / "scripts" / "inspect_store.py").main
    r = CliRunner().invoke(inspect, [str(tmp_path / "s"), "--verify"])
    assert r.exit_code == 0, r.output
    assert f"12 proteins, {offsets[-1]} tokens, 4 shard(s) of 3 proteins (complete)" in r.output
    assert "per-chunk CRC-32C" in r.output and "reads back as written" in r.output
    (tmp_path / "s" / "layer_1" / "c" / "0" / "0").unlink()
    r = CliRunner().invoke(inspect, [str(tmp_path / "s")])
    assert r.exit_code == 0  # the summary alone reads no rows
    r = CliRunner().invoke(inspect, [str(tmp_path / "s"), "--verify", "--layers", "1"])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "1 damaged layer shard(s)" in r.output and "layer 1, shard 0 (proteins 0..2" in r.output


def test_verify_names_non_finite_values(tmp_path):
    from interplm_jax.store.verify import verify_store

    acts = {1: [np.ones((4, 3), np.float32), np.array([[1, np.nan, 0]] * 2, np.float32)]}
    store = write_store(tmp_path / "s", ["a", "b"], acts, shard_size=1)
    [d] = verify_store(store)
    assert (d.layer, d.shard, d.proteins, d.rows) == (1, 1, (1, 2), (4, 6)) and "non-finite" in d.problem


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.pop("layers"), "manifest.json has no 'layers'"),
    (lambda m: m.update(layers="1"), "layers must be a non-empty list of integers"),
    (lambda m: m.update(d_model=0), "d_model must be a positive integer, got 0"),
    (lambda m: m.update(dtype="int8"), "dtype 'int8' is not one of"),
])
def test_manifest_missing_or_wrong_keys_are_store_errors(tmp_path, edit, message):
    make(tmp_path / "s")
    path = tmp_path / "s" / "manifest.json"
    m = json.loads(path.read_text())
    edit(m)
    path.write_text(json.dumps(m))
    with pytest.raises(StoreError, match=message):
        ActivationStore.open(tmp_path / "s")
    path.write_text("[1, 2]")
    with pytest.raises(StoreError, match="manifest.json holds a list, not a mapping"):
        ActivationStore.open(tmp_path / "s")


def test_verify_finds_a_deleted_chunk_in_a_store_without_chunk_checksums(tmp_path):
    """Stores without chunk checksums (older versions) read a deleted chunk as zeros; the
    marker CRC-32s still find it."""
    from interplm_jax.store.verify import verify_store

    rng = np.random.default_rng(5)
    acts = {1: [rng.standard_normal((9, 4)).astype(np.float32) for _ in range(6)]}
    store = write_store(tmp_path / "s", [f"p{i}" for i in range(6)], acts, shard_size=2,
                        chunk_rows=16, chunk_checksums=False)
    assert "no chunk checksums" in store.summary()
    (tmp_path / "s" / "layer_1" / "c" / "1" / "0").unlink()  # rows 16..31: proteins 1..3
    store = ActivationStore.open(tmp_path / "s")
    assert not store.rows(1, 16, 32).any()  # zeros, silently: why --verify exists
    assert [(d.shard, d.problem.split(" ")[0]) for d in verify_store(store)] == [(0, "checksum"), (1, "checksum")]


def test_forget_damaged_shards_then_rewrite_restores_the_store(tmp_path):
    """--verify --forget-damaged, then a resumed extraction rewrites only the damaged shards
    and the store reads back bit-identical to the original."""
    from click.testing import CliRunner

    from interplm_jax.cli import load_script
    from interplm_jax.store.verify import verify_store

    rng = np.random.default_rng(7)
    ids = [f"Q{i}" for i in range(10)]
    lengths = rng.integers(4, 14, size=10)
    acts = {L: [rng.standard_normal((k, 5)).astype(np.float32) for k in lengths] for L in (1, 2)}
    write_store(tmp_path / "s", ids, acts, shard_size=3, chunk_rows=16)
    chunk = tmp_path / "s" / "layer_1" / "c" / "1" / "0"  # rows 16..31
    chunk.write_bytes(chunk.read_bytes()[:-3] + b"xyz")
    inspect = load_script(Path(__file__).resolve().parents[1] / "scripts" / "inspect_store.py").main
    r = CliRunner().invoke(inspect, [str(tmp_path / "s"), "--verify", "--forget-damaged"])
    assert r.exit_code == 0 and "forgot shard(s)" in r.output, r.output
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    damaged = {p // 3 for p in range(10) if offsets[p] < 32 and offsets[p + 1] > 16}
    with pytest.raises(StoreError, match="incomplete store"):
        ActivationStore.open(tmp_path / "s")
    w = StoreWriter.open(tmp_path / "s", ids, lengths, (1, 2), 5, {"name": "in-memory"}, shard_size=3,
                         chunk_rows=16)
    assert {s.index for s in w.pending_shards()} == damaged
    for s in w.pending_shards():
        w.write_shard(s, {L: np.concatenate(acts[L][s.protein_start:s.protein_stop]) for L in (1, 2)})
    assert w.finalize()
    store = ActivationStore.open(tmp_path / "s")
    assert verify_store(store) == []
    for L in (1, 2):
        np.testing.assert_array_equal(store.rows(L, 0, store.n_tokens), np.concatenate(acts[L]))
