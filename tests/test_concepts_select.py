"""Kept-concept filter, the valid/test split, SAE selection and the held-out report on
constructed cases with known answers."""

import numpy as np
import pytest

from interplm_jax.concepts.evalset import EXCLUDED, EvalSet, keep_concepts, make_eval_set
from interplm_jax.concepts.f1 import ConceptCounts
from interplm_jax.concepts.labels import build_labels
from interplm_jax.concepts.metrics import heldout_report, mean_best_f1, select_best
from interplm_jax.concepts.uniprot import read_uniprot_tsv
from interplm_jax.errors import InputError


def test_keep_concepts_uses_strict_thresholds_and_drops_catch_alls():
    names = ["A", "B", "C", "D", "Region_any", "Zinc finger_any"]
    residues = np.array([1500, 1501, 10, 10, 99999, 20])
    domains = np.array([10, 0, 11, 10, 999, 11])
    assert keep_concepts(names, residues, domains).tolist() == [1, 2, 5]
    assert keep_concepts(names, residues, domains, min_domains=25, min_residues=1000).tolist() == [0, 1]
    assert "Region_any" in EXCLUDED


@pytest.fixture(scope="module")
def demo_labels(demo_data):
    return build_labels(read_uniprot_tsv(demo_data / "uniprotkb_features.tsv.gz"), min_instances=3,
                        require_alphafold=False)


def test_split_is_seeded_disjoint_and_counts_match(demo_labels, tmp_path):
    es = make_eval_set(demo_labels, n_proteins=80, seed=3, min_domains=3, min_residues=200)
    assert len(es.valid) == 40 and len(es.test) == 40 and len(es.select) == 8
    assert not set(es.valid) & set(es.test) and set(es.select) <= set(es.valid)
    again = make_eval_set(demo_labels, n_proteins=80, seed=3, min_domains=3, min_residues=200)
    assert again.valid == es.valid and again.concepts == es.concepts
    assert make_eval_set(demo_labels, n_proteins=80, seed=4).valid != es.valid
    # the kept concepts are exactly those passing the rule on valid, counted independently
    res, dom = demo_labels.counts(demo_labels.indices(es.valid))
    expect = [c for c, r, d in zip(demo_labels.concepts, res, dom)
              if (d > 3 or r > 200) and c not in EXCLUDED]
    assert list(es.concepts) == expect
    assert es.meta["n_concepts_kept"] == len(expect)
    assert es.meta["n_concepts_kept_reported"] == sum(not c.startswith("amino_acid") for c in expect)
    both = make_eval_set(demo_labels, n_proteins=80, seed=3, min_domains=3, min_residues=200,
                         count_on="valid+test")
    assert set(es.concepts) <= set(both.concepts)
    es.save(tmp_path / "e.json")
    assert EvalSet.load(tmp_path / "e.json") == es
    with pytest.raises(InputError, match="cannot sample"):
        make_eval_set(demo_labels, n_proteins=10_000)


def counts(tp, fp, hits, n_res, n_dom, names=("Helix", "Active site_any")):
    tp, fp, hits = (np.array(x, np.int64) for x in (tp, fp, hits))
    return ConceptCounts(list(names), np.array([0.0, 0.5], np.float32), tp, fp, hits,
                         np.array(n_res), np.array(n_dom), np.array(["Active" in n for n in names]))


VALID = counts(tp=[[[4, 3], [2, 1]], [[0, 0], [5, 2]]], fp=[[[4, 0], [0, 0]], [[8, 3], [0, 0]]],
               hits=[[[4, 3], [2, 1]], [[0, 0], [5, 2]]], n_res=[10, 5], n_dom=[4, 5])
TEST = counts(tp=[[[4, 1], [3, 0]], [[0, 0], [0, 0]]], fp=[[[0, 0], [1, 0]], [[0, 0], [2, 2]]],
              hits=[[[4, 1], [3, 0]], [[0, 0], [0, 0]]], n_res=[10, 5], n_dom=[4, 5])


def test_heldout_report_carries_the_valid_threshold():
    rep = heldout_report(VALID, TEST)
    # Helix: feature 0 at 0.5 on valid (F1 6/7); on test at 0.5: P 1, R 1/4 -> F1 0.4
    # Active site: feature 1 at 0 (F1 1); no test TP -> 0
    assert [(r["feature"], r["valid_threshold"]) for r in rep.per_concept] == [(0, 0.5), (1, 0.0)]
    assert rep.per_concept[0]["valid_f1"] == pytest.approx(6 / 7)
    assert rep.per_concept[0]["test_f1"] == pytest.approx(0.4)
    assert rep.mean_test_f1 == pytest.approx(0.2)
    # pairs with valid F1 > 0.5: (Helix, 0), (Helix, 1), (Active site, 1); only (Helix, 1) keeps it
    assert rep.n_pairs_valid == 3 and rep.n_pairs_test == 1
    assert (rep.n_concepts_test, rep.n_features_test) == (1, 1)


def test_heldout_report_reference_mode_repicks_the_threshold():
    rep = heldout_report(VALID, TEST, reference_test=True)
    assert rep.per_concept[0]["test_threshold"] == 0.0 and rep.per_concept[0]["test_f1"] == 1.0
    assert rep.mean_test_f1 == 1.0          # Active site (no test TP) left out of the mean
    assert rep.n_pairs_valid == 3 and rep.n_pairs_test == 2
    assert rep.n_features_test == 2


def test_select_best_picks_the_highest_mean_best_f1():
    assert mean_best_f1(VALID) == pytest.approx((6 / 7 + 1.0) / 2)
    assert mean_best_f1(TEST) == pytest.approx((1.0 + 0.0) / 2)
    best, score = select_best({"b": TEST, "a": VALID, "c": TEST})
    assert best == "a" and list(score) == ["a", "b", "c"]
    best, _ = select_best({"y": TEST, "x": TEST})
    assert best == "x"


def test_split_prefers_proteins_with_structures(demo_labels):
    """Preferred ids (e.g. those with an AlphaFold model) are sampled first, over valid and test
    alike; without a preference the sample is unchanged."""
    ids = demo_labels.protein_ids
    prefer = frozenset(ids[::7][:10])
    plain = make_eval_set(demo_labels, n_proteins=30, seed=3)
    assert make_eval_set(demo_labels, n_proteins=30, seed=3, prefer=()).valid == plain.valid
    es = make_eval_set(demo_labels, n_proteins=30, seed=3, prefer=prefer)
    chosen = set(es.valid) | set(es.test)
    assert len(chosen) == 30 and prefer <= chosen and es.meta["n_preferred"] == 10
    assert prefer & set(es.valid) and prefer & set(es.test)
    assert make_eval_set(demo_labels, n_proteins=30, seed=3, prefer=prefer).valid == es.valid
    assert len(prefer - set(plain.valid) - set(plain.test)) > 0  # the preference changed the sample
