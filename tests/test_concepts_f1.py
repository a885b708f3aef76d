"""F1 counting and metrics: a hand-worked example, a plain NumPy reference on random inputs,
chunking invariance, and parity with the reference's calc_metrics_sparse + calculate_metrics."""

import numpy as np
import pytest
from scipy import sparse

from reference import reference_module
from interplm_jax.concepts.f1 import ConceptCounts, CountAccumulator, count_chunks
from interplm_jax.concepts.metrics import best_feature_per_concept, best_thresholds, scores
from interplm_jax.errors import InputError

THR = (0.0, 0.15, 0.5, 0.6, 0.8)


def hand_example():
    """Two proteins (6 + 4 residues), one feature, concept X (per domain) with domains
    {A0-A2}, {A4-A5}, {B1-B2}, concept 'Active site_any' (per residue) on A0, A4, B3."""
    acts = np.array([0.9, 0, 0, 0.3, 0.6, 0, 0, 0.2, 0, 0.7], np.float32)[:, None]
    x = np.array([1, 1, 1, 0, 2, 2, 0, 3, 3, 0])
    y = np.array([1, 0, 0, 0, 2, 0, 0, 0, 0, 3])
    return acts, np.stack([x, y], 1)


def test_hand_worked_example():
    acts, lab = hand_example()
    acc = CountAccumulator(1, 2, (0.0, 0.5), per_residue=[False, True])
    acc.update(acts[:6], sparse.csr_matrix(lab[:6]))   # protein A
    acc.update(acts[6:], sparse.csr_matrix(lab[6:]))   # protein B
    c = acc.result(["X", "Active site_any"])
    # t = 0: on = A0 A3 A4 B1 B3; t = 0.5: on = A0 A4 B3
    assert c.tp[:, 0].tolist() == [[3, 2], [3, 3]]
    assert c.fp[:, 0].tolist() == [[2, 1], [2, 0]]
    assert c.hits[0, 0].tolist() == [3, 2]
    assert c.n_residues.tolist() == [7, 3] and c.n_domains.tolist() == [3, 3]
    s = scores(c)
    np.testing.assert_allclose(s.precision[:, 0], [[0.6, 2 / 3], [0.6, 1.0]])
    np.testing.assert_allclose(s.recall[:, 0], [[1.0, 2 / 3], [1.0, 1.0]])   # domain / residue recall
    np.testing.assert_allclose(s.f1[:, 0], [[0.75, 2 / 3], [0.75, 1.0]])
    np.testing.assert_allclose(s.f1_residue[0, 0, 0], 2 * 0.6 * (3 / 7) / (0.6 + 3 / 7))
    best = best_thresholds(s)
    assert best.threshold[:, 0].tolist() == [0, 1]
    np.testing.assert_allclose(best.f1[:, 0], [0.75, 1.0])


def test_ties_pick_residue_f1_then_the_lowest_threshold_and_feature():
    # two identical features: every threshold above the lowest activation gives the same counts
    acts = np.array([[0.9, 0.9], [0.9, 0.9], [0.0, 0.0]], np.float32)
    lab = sparse.csr_matrix(np.array([[1], [1], [0]]))
    c = count_chunks([(acts, lab)], 2, ["X"], np.array([False]), THR)
    best = best_thresholds(scores(c))
    assert best.threshold.tolist() == [[0, 0]] and best.f1.tolist() == [[1.0, 1.0]]
    assert best_feature_per_concept(best).tolist() == [0]


def random_case(rng, R=400, F=30, C=7, density=0.25):
    acts = (rng.random((R, F)) * (rng.random((R, F)) < density)).astype(np.float32)
    acts[rng.random((R, F)) < 0.05] = 0.5  # exact ties with a threshold (strict >)
    lab = np.zeros((R, C), np.int64)
    for c in range(C):
        pos, d = 0, 1
        while pos < R:
            n = int(rng.integers(1, 15))
            if rng.random() < 0.4:
                lab[pos:pos + n, c] = d
                d += 1
            pos += n
    return acts, lab


def numpy_counts(acts, lab, thr):
    C, F, T = lab.shape[1], acts.shape[1], len(thr)
    tp, fp, hits = (np.zeros((C, F, T), np.int64) for _ in range(3))
    for t in range(T):
        on = acts > np.float32(thr[t])
        for c in range(C):
            tp[c, :, t] = (on & (lab[:, [c]] > 0)).sum(0)
            fp[c, :, t] = (on & (lab[:, [c]] == 0)).sum(0)
            for f in range(F):
                hits[c, f, t] = len(set(lab[on[:, f], c]) - {0})
    return tp, fp, hits


def test_counts_equal_a_plain_numpy_computation():
    acts, lab = random_case(np.random.default_rng(1))
    c = count_chunks([(acts, sparse.csr_matrix(lab))], acts.shape[1], list("abcdefg"), np.zeros(7, bool), THR)
    tp, fp, hits = numpy_counts(acts, lab, THR)
    np.testing.assert_array_equal(c.tp, tp)
    np.testing.assert_array_equal(c.fp, fp)
    np.testing.assert_array_equal(c.hits, hits)
    assert c.n_domains.tolist() == [len(set(lab[:, j]) - {0}) for j in range(7)]


def test_chunked_sparse_and_dense_inputs_agree():
    acts, lab = random_case(np.random.default_rng(2))
    whole = count_chunks([(acts, sparse.csr_matrix(lab))], 30, list("abcdefg"), np.zeros(7, bool), THR)
    # cut between "proteins" where no domain crosses
    safe = [r for r in range(1, 400) if ((lab[r] == 0) | (lab[r - 1] == 0) | (lab[r] != lab[r - 1])).all()]
    cuts = [0] + safe[::5] + [400]
    assert len(cuts) > 4
    parts = [(sparse.csr_matrix(acts[a:b]), sparse.csr_matrix(lab[a:b])) for a, b in zip(cuts[:-1], cuts[1:])]
    chunked = count_chunks(parts, 30, list("abcdefg"), np.zeros(7, bool), THR)
    for k in ("tp", "fp", "hits"):
        np.testing.assert_array_equal(getattr(chunked, k), getattr(whole, k))


def test_counts_add_and_round_trip(tmp_path):
    acts, lab = random_case(np.random.default_rng(3), R=100)
    a = count_chunks([(acts[:50], sparse.csr_matrix(lab[:50]))], 30, list("abcdefg"), np.zeros(7, bool), THR)
    b = count_chunks([(acts[50:], sparse.csr_matrix(lab[50:]))], 30, list("abcdefg"), np.zeros(7, bool), THR)
    (a + b).save(tmp_path / "c.npz")
    back = ConceptCounts.load(tmp_path / "c.npz")
    np.testing.assert_array_equal(back.fp, a.fp + b.fp)
    with pytest.raises(InputError, match="thresholds"):
        CountAccumulator(3, 2, (0.5, 0.1))


def test_parity_with_the_reference(tmp_path):
    ca = reference_module("interplm.analysis.concepts.compare_activations")
    cf = reference_module("interplm.analysis.concepts.calculate_f1")
    rng = np.random.default_rng(4)
    acts, lab = random_case(rng, R=500, F=40, C=6)
    names = ["Domain_X", "Helix", "Active site_any", "Region_Y", "Disulfide bond", "Motif_Z"]
    per_res = [ca.is_aa_level_concept(n) for n in names]
    tp_r, fp_r, tpd_r = ca.calc_metrics_sparse(sparse.csr_matrix(acts), sparse.csr_matrix(lab), list(THR), per_res)
    ours = count_chunks([(acts, sparse.csr_matrix(lab))], 40, names, np.array(per_res), THR)
    np.testing.assert_array_equal(ours.tp, tp_r)
    np.testing.assert_array_equal(ours.fp, fp_r)
    dom = ~np.array(per_res)
    np.testing.assert_array_equal(ours.hits[dom], tpd_r[dom])

    rows = cf.calculate_metrics(tp_r, fp_r, tpd_r, ours.n_residues, ours.n_domains, names, list(THR), per_res)
    rows = rows.to_dict("records") if hasattr(rows, "to_dict") else rows
    s = scores(ours)
    assert len(rows) == int((ours.tp > 0).sum())
    for r in rows:
        c, f, t = names.index(r["concept"]), r["feature"], THR.index(r["threshold_pct"])
        assert s.precision[c, f, t] == pytest.approx(r["precision"], abs=1e-12)
        assert s.recall[c, f, t] == pytest.approx(r["recall_per_domain"], abs=1e-12)
        assert s.f1[c, f, t] == pytest.approx(r["f1_per_domain"], abs=1e-12)
        assert s.f1_residue[c, f, t] == pytest.approx(r["f1"], abs=1e-12)
    assert (s.f1[ours.tp == 0] == 0).all()
