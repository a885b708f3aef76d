"""The training stream: coverage, shard locality, seeded order, exact resume, host slices."""

import itertools

import numpy as np
import pytest

from interplm_jax.data import TokenStream
from interplm_jax.errors import InputError
from interplm_jax.store import write_store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Token t's activation is (t, shard of t, ...): rows identify themselves."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(20, 120, size=47)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    shard_size = 10
    acts = []
    for p, n in enumerate(lengths):
        rows = np.arange(offsets[p], offsets[p] + n, dtype=np.float32)
        acts.append(np.stack([rows, np.full(n, p // shard_size, np.float32), -rows], axis=1))
    return write_store(tmp_path_factory.mktemp("s") / "store", [f"p{i}" for i in range(47)],
                       {1: acts}, shard_size=shard_size)


def take(stream, n):
    return [b.copy() for b in itertools.islice(stream, n)]


def test_every_token_once_per_epoch_and_batches_from_one_shard(store):
    stream = TokenStream(store, 1, batch_size=64, seed=3, drop_remainder=False)
    batches = take(stream, stream.batches_per_epoch())
    tokens = np.concatenate([b[:, 0] for b in batches])
    np.testing.assert_array_equal(np.sort(tokens), np.arange(store.n_tokens))
    for b in batches:
        assert len(np.unique(b[:, 1])) == 1
    assert stream.position == {"epoch": 1, "shard_cursor": 0, "batch": 0}


def test_drop_remainder_gives_fixed_shapes_and_drops_less_than_a_batch_per_shard(store):
    stream = TokenStream(store, 1, batch_size=64, seed=3)
    batches = take(stream, stream.batches_per_epoch())
    assert {b.shape for b in batches} == {(64, 3)}
    tokens = np.concatenate([b[:, 0] for b in batches])
    assert len(np.unique(tokens)) == len(tokens)
    assert store.n_tokens - len(tokens) < 64 * store.n_shards


def test_tokens_are_shuffled_within_shards_in_a_seeded_order(store):
    a = take(TokenStream(store, 1, batch_size=64, seed=3), 20)
    b = take(TokenStream(store, 1, batch_size=64, seed=3), 20)
    c = take(TokenStream(store, 1, batch_size=64, seed=4), 20)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    assert not np.array_equal(np.sort(a[0][:, 0]), a[0][:, 0])  # shuffled, not contiguous
    s = TokenStream(store, 1, batch_size=64, seed=3)
    assert not np.array_equal(s.shard_order(0), s.shard_order(1))


@pytest.mark.parametrize("prefetch", [True, False])
def test_restored_position_reproduces_the_rest_exactly(store, prefetch):
    whole = take(TokenStream(store, 1, batch_size=64, seed=5, prefetch=prefetch), 80)
    for cut in (1, 13, 37):  # mid-shard, and across an epoch boundary (~35 batches an epoch)
        first = TokenStream(store, 1, batch_size=64, seed=5)
        take(first, cut)
        resumed = TokenStream(store, 1, batch_size=64, seed=5, position=first.position,
                              prefetch=prefetch)
        rest = take(resumed, 80 - cut)
        assert all(np.array_equal(x, y) for x, y in zip(rest, whole[cut:]))


def test_hosts_get_disjoint_slices_that_make_up_the_global_batch(store):
    whole = take(TokenStream(store, 1, batch_size=64, seed=2), 12)
    parts = [take(TokenStream(store, 1, batch_size=64, seed=2, host_index=h, host_count=4), 12)
             for h in range(4)]
    for i, batch in enumerate(whole):
        assert all(p[i].shape == (16, 3) for p in parts)
        np.testing.assert_array_equal(np.concatenate([p[i] for p in parts]), batch)


def test_bad_stream_options(store):
    with pytest.raises(InputError, match="layer 2 not in the store"):
        TokenStream(store, 2)
    with pytest.raises(InputError, match="divisible by the host count 3"):
        TokenStream(store, 1, batch_size=64, host_count=3)
    with pytest.raises(InputError, match="no shard has 100000 tokens"):
        TokenStream(store, 1, batch_size=100_000)


def test_non_finite_rows_are_named_before_training_sees_them(tmp_path):
    """NaN/Inf in the store: a StoreError naming the layer, shard, row and protein, not a
    non-finite loss with no hint (issue 13 item 16)."""
    from interplm_jax.errors import StoreError

    acts = [np.ones((5, 2), np.float32) for _ in range(6)]
    acts[4] = acts[4].copy()
    acts[4][3, 1] = np.inf  # protein 4 = rows 20..24; shard 2 (proteins 4, 5)
    st = write_store(tmp_path / "s", [f"p{i}" for i in range(6)], {3: acts}, shard_size=2)
    stream = TokenStream(st, 3, batch_size=5, seed=0)
    with pytest.raises(StoreError, match=r"layer 3 holds non-finite values .* 1 row\(s\) of shard 2, "
                                         r"first row 23 \(protein 'p4'\)"):
        take(stream, 6)
