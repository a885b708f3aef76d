"""Sequential/structural clustering: neighbour sets, scores, null, tests, flags (issue 6)."""

import numpy as np
import pytest
import scipy.stats

from interplm_jax.analysis import spatial, stats
from interplm_jax.analysis.spatial import PairScores, batch_scores, contact_lists

# A hand-built protein: residues 0-5 on the x axis 3.8 A apart, residue 6 5 A above residue 1,
# residue 7 10 A away from it.
COORDS = np.array([[3.8 * i, 0, 0] for i in range(6)] + [[3.8, 5.0, 0], [3.8, 0, 10.0]])
ACTS = np.array([0.1, 0.9, 0.2, 0.0, 0.3, 0.0, 0.5, 0.4])
REVERSE = np.arange(8)[::-1]


def _one(acts, coords, perms, window=2, radius=6.0):
    out = batch_scores(acts[None, :, None].astype(np.float32), np.array([len(acts)]),
                       contact_lists(coords[None], np.array([len(acts)]), radius),
                       perms[None], window)
    return {k: v[0] for k, v in out.items()}


def test_hand_built_neighbours_scores_and_null():
    # pos_max = 1; sequence neighbours {0, 2, 3}; structure neighbours {0, 2, 6}
    s = _one(ACTS, COORDS, np.stack([REVERSE, np.arange(8)]))
    assert s["pos_max"] == 1 and s["max"] == pytest.approx(0.9)
    assert (s["n_seq"], s["n_struct"]) == (3, 3)
    assert s["seq_obs"] == pytest.approx((0.1 + 0.2 + 0.0) / 3)
    assert s["struct_obs"] == pytest.approx((0.1 + 0.2 + 0.5) / 3)
    # reversed activations [0.4, 0.5, 0.0, 0.3, 0.0, 0.2, 0.9, 0.1] at the same positions,
    # averaged with the identity permutation (= the observed score)
    assert s["seq_null"] == pytest.approx(((0.4 + 0.0 + 0.3) / 3 + 0.1) / 2)
    assert s["struct_null"] == pytest.approx(((0.4 + 0.0 + 0.9) / 3 + 0.8 / 3) / 2)


def test_contact_lists_match_brute_force_with_padding():
    rng = np.random.default_rng(0)
    lengths = np.array([30, 17, 25])
    coords = np.zeros((3, 30, 3))
    for p, n in enumerate(lengths):
        coords[p, :n] = np.cumsum(rng.normal(size=(n, 3)) * 2.5, axis=0)
        coords[p, n:] = coords[p, 0]  # padding on top of a real residue must not count
    lists = contact_lists(coords, lengths, 6.0)
    for p, n in enumerate(lengths):
        for i in range(n):
            d = np.linalg.norm(coords[p, :n] - coords[p, i], axis=1)
            want = [j for j in range(n) if j != i and d[j] <= 6.0]
            got = [j for j in lists[p, i] if j >= 0]
            assert got == want
        assert (lists[p, n:] == -1).all() or n == 30


def reference_scores(acts, coords, perms, window=2, radius=6.0):
    """Plain per-protein, per-feature loop: the procedure as written."""
    L = len(acts)
    pos = int(np.argmax(acts))
    seq = [j for j in range(L) if j != pos and abs(j - pos) <= window]
    dist = np.sqrt(((coords - coords[pos]) ** 2).sum(axis=1))
    struct = [j for j in range(L) if j != pos and dist[j] <= radius]
    out = dict(max=acts[pos], pos_max=pos, n_seq=len(seq), n_struct=len(struct))
    for name, nb in (("seq", seq), ("struct", struct)):
        out[f"{name}_obs"] = np.mean(acts[nb]) if nb else np.nan
        out[f"{name}_null"] = np.mean([np.mean(acts[perm][nb]) for perm in perms]) if nb else np.nan
    return out


def _random_protein(rng, L):
    steps = rng.normal(size=(L, 3))
    steps *= 3.8 / np.linalg.norm(steps, axis=1, keepdims=True)
    return np.cumsum(steps, axis=0)


def test_collect_pairs_equals_per_protein_loop():
    rng = np.random.default_rng(1)
    lengths = [40, 7, 55, 1, 23, 60]
    ids = [f"P{i}" for i in range(len(lengths))]
    coords = [_random_protein(rng, L).astype(np.float32) for L in lengths]
    d, F = 6, 9
    raw = {pid: rng.normal(size=(L, d)).astype(np.float32) for pid, L in zip(ids, lengths)}
    W = rng.normal(size=(d, F)).astype(np.float32)

    def features(x):
        return np.clip(x @ W / 4, 0, 1)

    pairs = spatial.collect_pairs(ids, coords, raw.__getitem__, features, threshold=0.3, window=2,
                                  radius=6.0, n_permutations=5, seed=3, batch_tokens=128)
    assert len(pairs) > 20
    seen = set()
    for e in range(len(pairs)):
        p, f = pairs.protein[e], pairs.feature[e]
        seen.add((p, f))
        a = features(raw[ids[p]])[:, f]
        perms = spatial.protein_permutations(ids[p], lengths[p], 5, seed=3)
        want = reference_scores(a.astype(np.float64), coords[p].astype(np.float64), perms)
        for k, v in want.items():
            np.testing.assert_allclose(getattr(pairs, k)[e], v, rtol=1e-6, atol=1e-7,
                                       err_msg=f"{k} of protein {p} feature {f}")
    expected = {(p, f) for p, pid in enumerate(ids) for f in range(F)
                if features(raw[pid])[:, f].max() > 0.3}
    assert seen == expected


def test_permutations_are_seeded_per_protein():
    a = spatial.protein_permutations("P1", 50, 5, seed=0)
    assert a.shape == (5, 50)
    assert (np.sort(a, axis=1) == np.arange(50)).all()
    np.testing.assert_array_equal(a, spatial.protein_permutations("P1", 50, 5, seed=0))
    assert not np.array_equal(a, spatial.protein_permutations("P2", 50, 5, seed=0))
    assert not np.array_equal(a, spatial.protein_permutations("P1", 50, 5, seed=1))


def _pairs(feature, obs_null, n_struct=None):
    """PairScores from per-pair (seq_obs, seq_null, struct_obs, struct_null)."""
    obs_null = np.asarray(obs_null, float)
    E = len(feature)
    return PairScores(protein=np.arange(E), feature=np.asarray(feature), max=np.ones(E),
                      pos_max=np.zeros(E, int), seq_obs=obs_null[:, 0], seq_null=obs_null[:, 1],
                      struct_obs=obs_null[:, 2], struct_null=obs_null[:, 3],
                      n_seq=np.full(E, 4), n_struct=np.full(E, 3) if n_struct is None
                      else np.asarray(n_struct))


def test_t_test_d_and_bonferroni_against_scipy():
    rng = np.random.default_rng(2)
    # feature 0: 30 candidates, feature 1: 12 (sampled to 10), feature 2: 3 (< min, untested),
    # feature 3: 8 candidates of which 2 have no structural neighbour (dropped, Q10)
    feats = np.repeat([0, 1, 2, 3], [30, 12, 3, 8])
    vals = rng.uniform(size=(len(feats), 4))
    vals[feats == 0, 2] += 0.5
    n_struct = np.full(len(feats), 3)
    n_struct[np.flatnonzero(feats == 3)[[1, 5]]] = 0
    pairs = _pairs(feats, vals, n_struct)
    table = stats.feature_tests(pairs, 5, min_proteins=5, max_proteins=10, alpha=0.05, seed=0)
    assert list(table["tested"]) == [True, True, False, True, False]
    assert list(table["n_candidates"]) == [30, 12, 3, 8, 0]
    assert list(table["n_used"]) == [10, 10, 0, 6, 0]
    assert table["n_dropped"][3] == 2
    for f in (0, 1, 3):
        rows = np.flatnonzero(feats == f)
        rows = rows[stats.sample_proteins(len(rows), 10, 0, f)]
        rows = rows[n_struct[rows] > 0]
        for kind, (o, n) in (("seq", (0, 1)), ("struct", (2, 3))):
            res = scipy.stats.ttest_rel(vals[rows, o], vals[rows, n])
            diff = vals[rows, o] - vals[rows, n]
            assert table[f"{kind}_t"][f] == pytest.approx(res.statistic)
            assert table[f"{kind}_p"][f] == pytest.approx(res.pvalue)
            assert table[f"{kind}_d"][f] == pytest.approx(diff.mean() / diff.std(ddof=1))
            assert table[f"{kind}_p_bonferroni"][f] == pytest.approx(min(1.0, 3 * res.pvalue))
    assert np.isnan(table["seq_p"][2]) and not table["structural_only"][2]


def test_bonferroni_caps_at_one():
    np.testing.assert_array_equal(stats.bonferroni(np.array([0.001, 0.2, 0.5, np.nan]), 4),
                                  [0.004, 0.8, 1.0, np.nan])


def test_sampling_is_seeded_and_bounded():
    a = stats.sample_proteins(500, 100, seed=0, feature=7)
    assert len(a) == 100 and len(set(a)) == 100 and (np.diff(a) > 0).all()
    np.testing.assert_array_equal(a, stats.sample_proteins(500, 100, seed=0, feature=7))
    assert not np.array_equal(a, stats.sample_proteins(500, 100, seed=0, feature=8))
    np.testing.assert_array_equal(stats.sample_proteins(40, 100, 0, 0), np.arange(40))


# --- a helix packed against a distant strand ------------------------------------------------

def helix_strand_protein():
    """CA trace: helix 0-19 along z; loop 20-59 far away; strand 60-75 parallel to the helix
    axis 7 A from it; tail 76-89. Returns coords (90, 3) and the helix residues facing the
    strand."""
    coords = np.zeros((90, 3))
    i = np.arange(20)
    coords[:20] = np.stack([2.3 * np.cos(np.deg2rad(100 * i)), 2.3 * np.sin(np.deg2rad(100 * i)),
                            1.5 * i], axis=1)
    coords[20:60] = np.stack([np.full(40, 40.0), 3.8 * np.arange(40), np.zeros(40)], axis=1)
    coords[60:76] = np.stack([np.full(16, 7.0), np.zeros(16), 3.3 * np.arange(16)], axis=1)
    coords[76:] = np.stack([np.full(14, -40.0), 3.8 * np.arange(14), np.zeros(14)], axis=1)
    facing = [h for h in range(3, 17) if np.cos(np.deg2rad(100 * h)) > 0.8]
    return coords, facing


def synthetic_activations(n_proteins=30, seed=0):
    """Per-protein activations (90, 2) on the helix-strand geometry: feature 0 clusters in 3D
    only, feature 1 along the sequence. Returns coords (90, 3) and the list of activations."""
    coords, facing = helix_strand_protein()
    rng = np.random.default_rng(seed)
    L = len(coords)
    acts = []
    for p in range(n_proteins):
        h = facing[p % len(facing)]
        a = rng.uniform(0, 0.1, size=(L, 2)).astype(np.float32)
        # feature 0: the max on the helix plus the strand residues packed against it (3D only);
        # its sequence neighbours look like random positions of the protein
        near = np.flatnonzero(np.linalg.norm(coords[60:76] - coords[h], axis=1) <= 6.0) + 60
        a[h, 0] = 1.0
        a[near, 0] = rng.uniform(0.6, 0.9, size=len(near))
        seq = [h - 2, h - 1, h + 1, h + 2]
        a[seq, 0] = a[rng.integers(0, L, size=4), 0]
        # feature 1: the max and its sequence neighbours
        a[h, 1] = 1.0
        a[seq, 1] = rng.uniform(0.6, 0.9, size=4)
        acts.append(a)
    return coords, acts


def _synthetic_pairs(n_proteins=30, seed=0):
    coords, acts = synthetic_activations(n_proteins, seed)
    table = {f"S{p}": a for p, a in enumerate(acts)}
    return spatial.collect_pairs(list(table), [coords] * n_proteins, table.__getitem__,
                                 lambda x: x, threshold=0.6, window=2, radius=6.0,
                                 n_permutations=5, seed=0)


@pytest.mark.parametrize("alternative", ["two-sided", "greater"])
def test_structural_feature_is_flagged_and_sequence_local_one_is_not(alternative):
    pairs = _synthetic_pairs()
    table = stats.feature_tests(pairs, 2, min_proteins=25, max_proteins=100, alpha=0.05, seed=0,
                                alternative=alternative)
    assert table["tested"].all() and list(table["n_used"]) == [30, 30]
    assert table["struct_significant"][0] and not table["seq_significant"][0]
    assert table["structural_only"][0]
    assert table["seq_significant"][1] and table["seq_d"][1] > 1
    assert not table["structural_only"][1]


class _Interrupt(Exception):
    pass


def test_interrupted_collection_resumes_to_the_same_result(tmp_path):
    rng = np.random.default_rng(5)
    lengths = [30, 45, 12, 60, 33, 28, 50, 41]
    ids = [f"R{i}" for i in range(len(lengths))]
    coords = [_random_protein(rng, L).astype(np.float32) for L in lengths]
    acts = {pid: rng.uniform(size=(L, 7)).astype(np.float32) for pid, L in zip(ids, lengths)}
    kw = dict(threshold=0.6, window=2, radius=6.0, n_permutations=5, seed=0, batch_tokens=256)
    whole = spatial.collect_pairs(ids, coords, acts.__getitem__, lambda x: x, **kw)

    calls = []

    def flaky(pid):
        calls.append(pid)
        if len(calls) > 5:
            raise _Interrupt
        return acts[pid]

    ckpt = tmp_path / "pairs.partial.npz"
    with pytest.raises(_Interrupt):
        spatial.collect_pairs(ids, coords, flaky, lambda x: x, checkpoint=ckpt,
                              checkpoint_key="k", checkpoint_seconds=0, **kw)
    with np.load(ckpt) as z:
        assert 0 < int(z["done"]) < len(spatial._batches(np.array(lengths), 256))
    loaded = []
    resumed = spatial.collect_pairs(ids, coords, lambda p: loaded.append(p) or acts[p],
                                    lambda x: x, checkpoint=ckpt, checkpoint_key="k", **kw)
    assert len(loaded) < len(ids)  # the finished batches were not redone
    for name in spatial.FIELDS:
        np.testing.assert_array_equal(getattr(resumed, name), getattr(whole, name))
    # another key (other inputs): starts over, same result
    again = spatial.collect_pairs(ids, coords, acts.__getitem__, lambda x: x, checkpoint=ckpt,
                                  checkpoint_key="other", **kw)
    np.testing.assert_array_equal(again.struct_null, whole.struct_null)
    # a damaged checkpoint: starts over, same result
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    again = spatial.collect_pairs(ids, coords, acts.__getitem__, lambda x: x, checkpoint=ckpt,
                                  checkpoint_key="k", **kw)
    np.testing.assert_array_equal(again.struct_null, whole.struct_null)
