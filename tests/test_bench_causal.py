"""The causal test (interplm_jax/bench/causal.py, torch_bridge/causal.py, bench.py causal) on the
tiny ESM-2 with an SAE built by hand: one feature fires on lysines (K) and its decoder row points
along the gradient of log p(K), so zeroing it must lower that log-probability."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import REPO
from interplm_jax.bench.causal import (CausalConfig, ChosenPair, Site, bh_qvalues, concept_sites, null_features,
                                       permutation_p, read_causal, read_pairs, standardized)
from interplm_jax.cli import load_script
from interplm_jax.concepts.evalset import EvalSet
from interplm_jax.concepts.labels import ConceptLabels
from interplm_jax.errors import InputError
from interplm_jax.normalize import FeatureStats, write_feature_stats
from interplm_jax.sae_dir import SavedSAE, save_sae
from torch_bridge.causal import causal_rows, edited_logprobs, intervention_deltas, true_logprobs
from torch_bridge.intervene import clean_forward, tokenize, wrap
from torch_bridge.models import family_of_config, load_masked_lm
from torch_bridge.sae import TorchSAE

LAYER, F, CONCEPT = 4, 48, "Binding site_K"
AA = "ACDEFGHILMNPQRSTVWY"  # no K: lysines are placed by hand


def _sequences(rng, n=10):
    seqs = []
    for _ in range(n):
        s = list(rng.choice(list(AA), size=int(rng.integers(30, 46))))
        for p in rng.choice(len(s), size=3, replace=False):
            s[p] = "K"
        seqs.append("".join(s))
    return seqs


@pytest.fixture(scope="module")
def setup(tiny_esm, tmp_path_factory):
    """The tiny ESM-2, 10 proteins, and a ReLU SAE at layer 4 whose feature 0 reads the lysines
    (encoder: mean h on K minus elsewhere) and writes along d log p(K) / dh (decoder); its 47
    other features random. Its feature statistics are those of these proteins' residues."""
    root = tmp_path_factory.mktemp("causal")
    rng = np.random.default_rng(0)
    lm, tok = load_masked_lm(tiny_esm)
    seqs = _sequences(rng)
    ids, attn = tokenize(tok, seqs)
    logits, hidden = clean_forward(lm, ids, attn, LAYER)
    res = (attn.bool() & (ids != tok.cls_token_id) & (ids != tok.eos_token_id)).numpy()
    is_k = (ids == tok.convert_tokens_to_ids("K")).numpy()
    h = hidden.double().numpy()
    u = h[is_k].mean(0) - h[res & ~is_k].mean(0)
    u /= np.linalg.norm(u)
    proj = h @ u
    h_grad = hidden.clone().requires_grad_(True)  # layer 4: logits = lm_head(hidden_states[4])
    logp = true_logprobs(lm.lm_head(h_grad), ids)
    logp[torch.from_numpy(is_k)].sum().backward()
    g = h_grad.grad.double().numpy()[is_k].mean(0)
    W_enc = rng.normal(size=(32, F)) / np.sqrt(32)
    b_enc = rng.uniform(-2.0, 0.5, size=F)
    W_dec = rng.normal(size=(F, 32))
    W_dec /= np.linalg.norm(W_dec, axis=1, keepdims=True)
    W_enc[:, 0], b_enc[0] = u, -(proj[is_k].min() - 0.05)  # fires on every K
    f0 = np.maximum(proj[is_k] + b_enc[0], 0)
    W_dec[0] = 2.0 / f0.mean() * g / np.linalg.norm(g)  # zeroing moves h by ~2 against the gradient
    params = {k: np.asarray(v, np.float32) for k, v in dict(
        b_pre=np.zeros(32), W_enc=W_enc, b_enc=b_enc, W_dec=W_dec, scale=np.ones(F)).items()}
    f = np.maximum(h[res] @ params["W_enc"] + params["b_enc"], 0)
    stats = FeatureStats(f.max(0).astype(np.float32), (f > 0).sum(0).astype(np.int64), int(res.sum()), len(seqs))
    saved = SavedSAE("relu", params, {}, {"layer": LAYER, "id": "hand"})
    sae_dir = save_sae(root / "sae", saved)
    write_feature_stats(sae_dir, stats)
    sites = [Site(f"P{i}", s, np.flatnonzero(np.array(list(s)) == "K")) for i, s in enumerate(seqs)]
    f0 = np.maximum(proj + b_enc[0], 0)  # (B, T) feature 0 at every token
    on_k = np.maximum(h[is_k] @ params["W_enc"] + params["b_enc"], 0).mean(0)  # (F,) mean on the Ks
    others = [j for j in np.argsort(on_k) if j != 0 and on_k[j] > 0]
    return {"root": root, "lm": lm, "tok": tok, "seqs": seqs, "sae": TorchSAE.from_saved(saved), "saved": saved,
            "stats": stats, "sites": sites, "sae_dir": sae_dir, "f0": f0, "res": res, "is_k": is_k,
            "random_feature": int(others[len(others) // 2])}  # a random feature active on the Ks


def test_wired_feature_found_and_random_feature_not(setup):
    s = setup
    random_feature = s["random_feature"]
    pairs = [ChosenPair(CONCEPT, 0, 0.9, 0.8), ChosenPair(CONCEPT + "_random", random_feature, 0.9, 0.8)]
    sites = {CONCEPT: s["sites"], CONCEPT + "_random": s["sites"]}
    cfg = CausalConfig(null_size=20, batch_size=4, batch_rows=16)
    rows, notes = causal_rows(s["lm"], s["tok"], s["sae"], s["stats"], LAYER, pairs, sites, cfg)
    assert notes == []
    wired, rand = rows
    assert wired["delta_zero"] < -0.1  # zeroing the K feature lowers log p(K)
    assert wired["p_zero"] == pytest.approx(1 / 21) and wired["p_zero"] < 0.05
    assert rand["act_mean"] > 0 and rand["delta_zero"] != 0 and rand["p_zero"] >= 0.05
    assert wired["n_residues"] == 30 and wired["n_proteins"] == 10 and wired["null_size"] == 20
    assert wired["act_mean"] == pytest.approx(s["f0"][s["is_k"]].mean() / s["stats"].max[0], rel=1e-4)


@pytest.mark.parametrize("layer", [2, LAYER])
def test_delta_equals_a_plain_torch_forward_with_the_edited_hidden_state(setup, layer):
    """Independent of nnsight: a torch forward hook on the layer's module adds (target - f_j) W_dec[j]
    at the sites' positions, f_j from the NumPy formula on the clean hidden state (layer 2: the
    blocks after it run on the edit; 4: the final norm's output)."""
    s = setup
    lm, tok, sites = s["lm"], s["tok"], s["sites"][:4]
    features, targets = [0, 5, 0], [0.0, 0.0, float(s["stats"].max[0])]
    res = intervention_deltas(lm, tok, s["sae"], layer, sites, features, targets, batch_size=3, batch_rows=5)
    ids, attn = tokenize(tok, [x.sequence for x in sites])
    mask = np.zeros(ids.shape, bool)
    for b, x in enumerate(sites):
        mask[b, x.positions + 1] = True
    clean = true_logprobs(lm(ids, attention_mask=attn).logits, ids).detach().numpy()
    p = {k: v.astype(np.float64) for k, v in s["saved"].params.items()}
    module = lm.get_submodule(family_of_config(lm.config).module_path(layer, lm.config.num_hidden_layers))
    for k, (j, target) in enumerate(zip(features, targets)):
        def hook(mod, inp, out, j=j, target=target):
            h = out[0] if isinstance(out, tuple) else out
            f_j = np.maximum((h.double().numpy() - p["b_pre"]) @ p["W_enc"][:, j] + p["b_enc"][j], 0)
            shift = torch.from_numpy(np.where(mask, target - f_j, 0.0)[..., None] * p["W_dec"][j])
            h = h + shift.to(h.dtype)
            return (h,) + tuple(out[1:]) if isinstance(out, tuple) else h
        handle = module.register_forward_hook(hook)
        try:
            with torch.no_grad():
                edited = true_logprobs(lm(ids, attention_mask=attn).logits, ids).numpy()
        finally:
            handle.remove()
        np.testing.assert_allclose(res["delta"][k], (edited - clean)[mask], atol=2e-5)
    np.testing.assert_allclose(res["clean"], clean[mask], atol=1e-5)
    assert np.abs(res["delta"][2]).max() > 0.01  # the clamp moves every site
    assert layer != LAYER or np.abs(res["delta"][0]).max() > 0.01  # feature 0 fires on the Ks at layer 4


def test_no_op_intervention_changes_nothing(setup):
    s = setup
    lm, tok = s["lm"], s["tok"]
    ids, attn = tokenize(tok, s["seqs"][:3])
    for layer in (2, LAYER):
        logits, hidden = clean_forward(lm, ids, attn, layer)
        out = edited_logprobs(wrap(lm), ids, attn, layer, hidden, s["sae"].W_dec[[0, 1, 2]], torch.zeros(ids.shape))
        torch.testing.assert_close(out, true_logprobs(logits, ids), rtol=0, atol=1e-6)
    # feature 0 zeroed where it is already 0: nothing is run, the change is exactly 0
    quiet = np.flatnonzero((s["f0"][0] == 0) & s["res"][0]) - 1  # residue positions of protein 0
    assert len(quiet) > 5
    res = intervention_deltas(lm, tok, s["sae"], LAYER, [Site("P0", s["seqs"][0], quiet)], [0, 0], [0.0, 1.0])
    assert np.all(res["delta"][0] == 0) and np.all(res["delta"][1] != 0)


def test_permutation_p_standardized_and_bh_by_hand():
    null = [0.1, -0.6, 0.5, 0.2]
    assert permutation_p(0.5, null) == pytest.approx(3 / 5)  # |-0.6|, |0.5| >= 0.5, plus the feature
    assert permutation_p(-0.7, null) == pytest.approx(1 / 5)
    assert permutation_p(0.0, [0.0, 0.0]) == 1.0
    mean = (0.1 - 0.6 + 0.5 + 0.2) / 4
    sd = math.sqrt(sum((x - mean) ** 2 for x in null) / 3)
    assert standardized(0.5, null) == pytest.approx((0.5 - mean) / sd)
    assert math.isnan(standardized(0.3, [0.0, 0.0, 0.0]))
    # p sorted 0.01, 0.03, 0.04, 0.5 -> p*m/rank 0.04, 0.06, 0.0533, 0.5 -> running min from the top
    np.testing.assert_allclose(bh_qvalues([0.01, 0.04, 0.03, 0.5]), [0.04, 0.16 / 3, 0.16 / 3, 0.5])


def test_null_features_come_from_the_nearest_frequencies():
    freq = np.array([0.1, 0.11, 0.5, 0.09, 0.001, 0.0, 0.12, 0.3, 0.095, 0.2])
    live = freq > 0
    rng = np.random.default_rng(0)
    null = null_features(freq, live, 0, 2, rng)  # pool: the 8 nearest in log frequency of 0.1
    assert len(null) == 2 and 0 not in null and 5 not in null
    assert set(null) <= {1, 3, 8, 6, 9, 7, 2, 4}
    null = null_features(freq, live, 0, 1, rng)  # pool of 4: 8 (0.095), 1 (0.11), 3 (0.09), 6 (0.12)
    assert set(null) <= {8, 1, 3, 6}
    assert len(null_features(freq, live, 0, 50, rng)) == 8  # every other live feature


def _labels(seqs):
    residues = np.frombuffer("".join(seqs).encode(), np.uint8)
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in seqs])]).astype(np.int64)
    iv = [(p, 0, i + 1, int(k), int(k) + 1) for p, s in enumerate(seqs)
          for i, k in enumerate(np.flatnonzero(np.array(list(s)) == "K"))]
    iv += [(3, 1, 1, 0, 2), (1, 2, 1, 4, 6)]  # Helix on protein 3, Strand on protein 1
    iv = np.array(sorted(iv))  # intervals sorted by protein
    return ConceptLabels([f"P{i}" for i in range(len(seqs))], residues, offsets, [CONCEPT, "Helix", "Strand"],
                         *(iv[:, j].astype(np.int32) for j in (0, 1)), iv[:, 2].astype(np.int64),
                         iv[:, 3].astype(np.int32), iv[:, 4].astype(np.int32), amino_acids=False)


def test_concept_sites_are_the_annotated_test_residues(setup):
    seqs = setup["seqs"]
    labels = _labels(seqs)
    es = EvalSet(("P0",), tuple(f"P{i}" for i in (5, 1, 3)), ("P0",), (CONCEPT, "Helix", "Strand"), {}, {})
    sites = concept_sites(labels, es, [CONCEPT, "Helix"], max_proteins=2)
    assert [x.protein for x in sites[CONCEPT]] == ["P5", "P1"]  # split order, capped
    for x in sites[CONCEPT]:
        assert x.sequence == seqs[int(x.protein[1:])]
        np.testing.assert_array_equal(x.positions, np.flatnonzero(np.array(list(x.sequence)) == "K"))
    assert [(x.protein, x.positions.tolist()) for x in sites["Helix"]] == [("P3", [0, 1])]
    with pytest.raises(InputError, match="Coil"):
        concept_sites(labels, es, ["Coil"])


def test_read_pairs_filters_and_orders(tmp_path):
    path = tmp_path / "per_concept.csv"
    path.write_text("concept,feature,valid_threshold,valid_f1,test_threshold,test_f1\n"
                    "Helix,3,0.5,0.6,0.5,0.4\nBinding site_K,0,0.5,0.9,0.5,0.8\nBeta strand,7,0.5,0.3,0.5,0.2\n")
    assert [p.concept for p in read_pairs(path, 0.5)] == ["Binding site_K", "Helix"]
    assert [p.feature for p in read_pairs(path, 0.0, max_concepts=1)] == [0]
    with pytest.raises(InputError, match="no chosen pairs"):
        read_pairs(path, 0.95)


@pytest.fixture(scope="module")
def study_files(setup):
    root = setup["root"]
    seqs = setup["seqs"]
    _labels(seqs).save(root / "labels.npz")
    ids = tuple(f"P{i}" for i in range(len(seqs)))
    EvalSet(ids[:2], ids[2:], ids[:1], (CONCEPT, "Helix", "Strand"), {}, {}).save(root / "evalset.json")
    (root / "per_concept.csv").write_text("concept,feature,valid_threshold,valid_f1,test_threshold,test_f1\n"
                                          f"{CONCEPT},0,0.5,0.9,0.5,0.8\nHelix,3,0.5,0.6,0.5,0.4\n"
                                          "Strand,4,0.5,0.7,0.5,0.1\n")
    return root


def _bench(*args):
    return CliRunner().invoke(load_script(REPO / "scripts" / "bench.py").main, [str(a) for a in args])


def test_script_causal_then_table(setup, study_files, tiny_esm, tmp_path):
    root = study_files
    common = ["--model", tiny_esm, "--labels", root / "labels.npz", "--evalset", root / "evalset.json",
              "--sae", setup["sae_dir"], "--pairs", root / "per_concept.csv", "--null-size", 20, "--batch-rows", 32]
    res = _bench("causal", *common, "--layer", LAYER, "--out", tmp_path / "c4.csv")
    assert res.exit_code == 0, res.output
    rows = read_causal(tmp_path / "c4.csv")
    assert [r["concept"] for r in rows] == [CONCEPT, "Helix"] and rows[0]["sae"] == "hand"
    assert "'Strand'" in res.output and "no test protein annotated" in res.output  # only in valid
    assert rows[0]["n_proteins"] == 8 and rows[0]["p_zero"] < 0.05 and rows[0]["delta_zero"] < 0
    for r in rows:
        assert r["q_zero"] >= r["p_zero"] and r["q_clamp"] >= r["p_clamp"]
    # a second layer's table (the same numbers): causal.csv joins both, q-values over all 4 rows
    (tmp_path / "c2.csv").write_text((tmp_path / "c4.csv").read_text().replace("model,4,", "model,2,"))
    part = tmp_path / "bench_part.csv"
    part.write_text("model,layer,sae,arch,l0,fve,dead_frac,dense_frac,loss_recovered,n_concepts,mean_best_f1,"
                    "test_f1,chosen\nmodel,4,hand,relu,3,0.5,0,0,0.9,1,0.4,0.3,True\n")
    res = _bench("table", part, "--causal", tmp_path / "c4.csv", "--causal", tmp_path / "c2.csv",
                 "--out", tmp_path / "b")
    assert res.exit_code == 0, res.output
    joined = read_causal(tmp_path / "b" / "causal.csv")
    assert [(r["layer"], r["concept"]) for r in joined] == [(4, CONCEPT), (4, "Helix"), (2, CONCEPT), (2, "Helix")]
    p = [r["p_zero"] for r in joined]
    np.testing.assert_allclose([r["q_zero"] for r in joined], bh_qvalues(p))
    with open(tmp_path / "b" / "causal.csv") as f:
        header = next(csv.reader(f))
    assert header[:4] == ["model", "layer", "sae", "concept"] and header[-1] == "q_clamp"


def test_script_bad_input_exits_2(setup, study_files, tiny_esm, tmp_path):
    root = study_files
    common = ["--model", tiny_esm, "--labels", root / "labels.npz", "--evalset", root / "evalset.json",
              "--sae", setup["sae_dir"], "--pairs", root / "per_concept.csv", "--out", tmp_path / "c.csv"]
    res = _bench("causal", *common, "--layer", LAYER, "--min-valid-f1", 0.95)
    assert res.exit_code == 2 and "no chosen pairs" in res.output and "per_concept.csv" in res.output
    res = _bench("causal", *common, "--layer", 7)
    assert res.exit_code == 2 and "layer 7" in res.output
    bad = tmp_path / "pairs.csv"
    bad.write_text("concept,feature,valid_f1,test_f1\nHelix,480,0.9,0.8\n")
    res = _bench("causal", *common, "--layer", LAYER, "--pairs", bad)
    assert res.exit_code == 2 and "feature(s) [480]" in res.output and "48 features" in res.output
    bare = save_sae(tmp_path / "bare", setup["saved"])  # never normalized: no feature_stats/
    res = _bench("causal", *common, "--layer", LAYER, "--sae", bare)
    assert res.exit_code == 2 and "no feature_stats/" in res.output and "normalize" in res.output
    res = _bench("causal", "--model", tiny_esm, "--layer", LAYER, "--out", tmp_path / "c.csv")
    assert res.exit_code == 2 and "give --labels, --evalset, --sae, --pairs (or --study)" in res.output
    assert not (tmp_path / "c.csv").exists()
