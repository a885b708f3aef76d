"""The bench (interplm_jax/bench, scripts/bench.py) on a synthetic store: every number against
a plain NumPy computation; one pass over G SAEs == G single passes."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from click.testing import CliRunner

from _saes import np_encode_raw, random_sae
from interplm_jax.bench import grid_rows, measure_grid, plot_all, read_table, write_table
from interplm_jax.bench.guards import overlap, selection_ties, small_selection
from interplm_jax.bench.table import pareto_front
from interplm_jax.cli import load_script
from interplm_jax.concepts.evalset import EvalSet
from interplm_jax.concepts.labels import ConceptLabels
from interplm_jax.layout import BenchFiles
from interplm_jax.sae_dir import save_sae
from interplm_jax.store import write_store

from conftest import REPO

LAYER, D, F = 1, 8, 24
THR = (0.0, 0.15, 0.5, 0.6, 0.8)
# per-residue concepts (recall = TP / labelled residues), so NumPy needs no domain logic
CONCEPTS = ["Active site_a", "Cofactor_b", "Glycosylation_c"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """40 proteins of 6-20 residues; concept 0 planted along a direction that SAE 1's feature 0
    reads exactly; 3 ReLU SAEs."""
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("bench")
    ids = [f"P{i:03d}" for i in range(40)]
    lengths = rng.integers(6, 21, size=len(ids))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    iv = []  # (protein, concept, domain, start, stop)
    for p, n in enumerate(lengths):
        for c in range(len(CONCEPTS)):
            if rng.random() < 0.6:
                start = int(rng.integers(0, n - 3))
                iv.append((p, c, len([v for v in iv if v[1] == c]) + 1, start, start + int(rng.integers(1, 4))))
    iv = np.array(iv)
    residues = rng.choice(np.frombuffer(b"ACDEFGHIKLMNPQRSTVWY", np.uint8), size=offsets[-1])
    labels = ConceptLabels(ids, residues, offsets, CONCEPTS, *(iv[:, j].astype(np.int32) for j in (0, 1)),
                           iv[:, 2].astype(np.int64), iv[:, 3].astype(np.int32), iv[:, 4].astype(np.int32),
                           amino_acids=False)
    labels.save(root / "labels.npz")
    lab = np.zeros((offsets[-1], len(CONCEPTS)), bool)
    for p, c, _, a, b in iv:
        lab[offsets[p] + a:offsets[p] + b, c] = True
    x = rng.normal(size=(offsets[-1], D)).astype(np.float32)
    x[lab[:, 0], 0] += 6.0
    store = write_store(root / "store", ids, {LAYER: [x[offsets[p]:offsets[p + 1]] for p in range(len(ids))]},
                        shard_size=15)
    order = rng.permutation(len(ids))
    valid, test = [ids[i] for i in order[:20]], [ids[i] for i in order[20:]]
    es = EvalSet(tuple(valid), tuple(test), tuple(valid[:5]), tuple(CONCEPTS), {}, {})
    es.save(root / "evalset.json")
    saes = [random_sae("relu", D, F, seed=s) for s in range(3)]
    p = dict(saes[1].params)
    p["W_enc"] = p["W_enc"].copy()
    p["b_enc"] = p["b_enc"].copy()
    p["W_enc"][:, 0] = 0.0
    p["W_enc"][0, 0] = 1.0
    p["b_enc"][0], p["b_pre"] = -3.0, np.zeros(D, np.float32)
    p["scale"] = p["scale"].copy()
    p["scale"][0] = 0.1
    saes[1] = saes[1].replace(params=p)
    saes = [s.replace(meta={**s.meta, "id": f"{i:03d}"}, hparams={"lr": 1e-3, "l1": 0.01 * (i + 1)})
            for i, s in enumerate(saes)]
    for s in saes:
        save_sae(root / "saes" / s.meta["id"], s)
    return {"root": root, "labels": labels, "es": es, "store": store, "saes": saes, "x": x, "lab": lab,
            "offsets": offsets, "ids": ids}


def rows_of(study, split):
    pos = {p: i for i, p in enumerate(study["ids"])}
    o = study["offsets"]
    return np.concatenate([np.arange(o[pos[p]], o[pos[p] + 1]) for p in getattr(study["es"], split)])


def numpy_metrics(study, sae):
    """Every bench number of one SAE, in NumPy (float64) from the formulas of DESIGN.md section 7
    and the concepts' F1 (per-residue recall)."""
    te, va = rows_of(study, "test"), rows_of(study, "valid")
    x = study["x"].astype(np.float64)
    f = np_encode_raw(sae, x)
    x_hat = f @ sae.params["W_dec"].astype(np.float64) + sae.params["b_pre"]
    xt, ft = x[te], f[te]
    out = {"l0": (ft > 0).sum(1).mean(),
           "fve": 1 - ((xt - x_hat[te]) ** 2).sum() / ((xt - xt.mean(0)) ** 2).sum(),
           "dead_frac": ((ft > 0).sum(0) == 0).mean(), "dense_frac": ((ft > 0).mean(0) > 0.1).mean()}
    acts = (f * sae.params["scale"]).astype(np.float32)

    def f1(rows):  # (C, F, T)
        on = acts[rows][:, :, None] > np.array(THR, np.float32)
        lab = study["lab"][rows]
        tp = np.einsum("rc,rft->cft", lab.astype(np.int64), on.astype(np.int64))
        prec = np.divide(tp, on.sum(0)[None], out=np.zeros(tp.shape), where=on.sum(0)[None] > 0)
        rec = tp / lab.sum(0)[:, None, None]
        return np.divide(2 * prec * rec, prec + rec, out=np.zeros(tp.shape), where=prec + rec > 0)

    fv, ft1 = f1(va), f1(te)
    best = fv.reshape(len(CONCEPTS), -1).argmax(1)  # first max: lowest feature, then threshold
    out["mean_best_f1"] = fv.max((1, 2)).mean()
    out["n_concepts"] = int((fv.max((1, 2)) > 0.5).sum())
    out["test_f1"] = np.mean([ft1.reshape(len(CONCEPTS), -1)[c, best[c]] for c in range(len(CONCEPTS))])
    return out


def test_bench_rows_equal_numpy(study):
    m = measure_grid(study["store"], LAYER, study["labels"], study["es"], study["saes"], THR, chunk_residues=64)
    rows = grid_rows("esm2", LAYER, study["saes"], ["000", "001", "002"], m, {"000": 0.7}, chosen="001")
    for sae, row in zip(study["saes"], rows):
        want = numpy_metrics(study, sae)
        for k, v in want.items():
            assert row[k] == pytest.approx(v, rel=1e-5, abs=1e-6), (sae.meta["id"], k)
    assert rows[1]["n_concepts"] >= 1  # the planted concept is found by SAE 001's feature 0
    assert [r["chosen"] for r in rows] == [False, True, False]
    assert rows[0]["loss_recovered"] == 0.7 and np.isnan(rows[1]["loss_recovered"])
    assert rows[2]["l1"] == pytest.approx(0.03)


def test_one_pass_equals_single_passes(study):
    saes = study["saes"]
    together = measure_grid(study["store"], LAYER, study["labels"], study["es"], saes, THR, chunk_residues=50)
    for g, sae in enumerate(saes):
        alone = measure_grid(study["store"], LAYER, study["labels"], study["es"], [sae], THR, chunk_residues=50)
        for split in ("valid", "test"):
            a, b = getattr(together, split)[g], getattr(alone, split)[0]
            for k in ("tp", "fp", "hits", "n_residues", "n_domains"):
                np.testing.assert_array_equal(getattr(a, k), getattr(b, k), err_msg=f"{g} {split} {k}")
        for k in ("l0", "fve", "dead_frac", "dense_frac"):
            assert getattr(together.recon, k)[g] == pytest.approx(getattr(alone.recon, k)[0], rel=1e-6)


def test_neuron_baseline_row(study):
    from interplm_jax.normalize import neuron_sae

    x = study["x"]
    te = rows_of(study, "test")
    neurons = neuron_sae(x.min(0), x.max(0))
    m = measure_grid(study["store"], LAYER, study["labels"], study["es"], [neurons], THR)
    (row,) = grid_rows("esm2", LAYER, [neurons], ["neurons"], m)
    assert row["fve"] == 1.0 and row["loss_recovered"] == 1.0 and row["arch"] == "neuron"
    assert row["l0"] == pytest.approx((x[te] > x.min(0)).sum(1).mean())


def test_script_measure_then_table(study, tmp_path):
    root = study["root"]
    fid = tmp_path / "fidelity.tsv"
    fid.write_text("sae_id\tce_clean\tce_zero\tce_sae\tloss_recovered\tpct_loss_recovered\tn_proteins\n"
                   + "".join(f"{i:03d}\t1\t2\t1.5\t{0.1 * i}\t{10 * i}\t3\n" for i in range(3)))
    sel = tmp_path / "selection.csv"
    sel.write_text("model,kind,layer,name,counts,mean_best_f1,selected\n"
                   "m,sae,1,000,x,0.2,False\nm,sae,1,002,x,0.3,True\n")
    script = load_script(REPO / "scripts" / "bench.py")
    common = ["--labels", root / "labels.npz", "--evalset", root / "evalset.json", "--store", study["store"].url,
              "--layer", LAYER, "--chunk-residues", 100, "--thresholds", ",".join(map(str, THR))]
    saes = [a for i in range(3) for a in ("--sae", root / "saes" / f"{i:03d}")]
    res = CliRunner().invoke(script.main, ["measure", *map(str, common + saes), "--fidelity", str(fid),
                                           "--selection", str(sel), "--saes-per-pass", "2",
                                           "--out", str(tmp_path / "part.csv")])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(script.main, ["probes", *map(str, common[:8] + saes[:2]), "--max-residues", "300",
                                           "--out", str(tmp_path / "probes.csv")])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(script.main, ["table", str(tmp_path / "part.csv"), "--out", str(tmp_path / "b"),
                                           "--warning", "few proteins", "--probes", str(tmp_path / "probes.csv")])
    assert res.exit_code == 0, res.output
    with open(tmp_path / "b" / "probes_summary.csv") as f:
        means = {(r["probe"], r["k"]): float(r["mean_test_f1"]) for r in csv.DictReader(f)}
    assert set(means) == {("000", k) for k in ("1", "2", "5", "10")} | {("neurons", k) for k in ("1", "2", "5")} \
        | {("hidden", "8")}
    assert (tmp_path / "b" / "probes.png").stat().st_size > 1000
    rows = read_table(tmp_path / "b" / "bench.csv")
    with open(tmp_path / "b" / "bench.csv") as f:
        header = next(csv.reader(f))
    assert header == ["model", "layer", "sae", "arch", "l1", "l0", "fve", "dead_frac", "dense_frac",
                      "loss_recovered", "n_concepts", "mean_best_f1", "test_f1", "chosen"]  # lr is constant
    assert [r["loss_recovered"] for r in rows] == pytest.approx([0.0, 0.1, 0.2])
    assert [r["chosen"] for r in rows] == [False, False, True]
    for r, sae in zip(rows, study["saes"]):
        assert r["fve"] == pytest.approx(numpy_metrics(study, sae)["fve"], rel=1e-5)
    for name in ("pareto_fve.png", "pareto_loss_recovered.png", "pareto_n_concepts.png"):
        assert (tmp_path / "b" / name).stat().st_size > 1000
    assert "few proteins" in (tmp_path / "b" / "warnings.json").read_text()


def test_script_bad_fidelity_table_exits_2(study, tmp_path):
    root = study["root"]
    bad = tmp_path / "f.tsv"
    bad.write_text("sae_id\tloss_recovered\nzzz\t0.5\n")
    script = load_script(REPO / "scripts" / "bench.py")
    res = CliRunner().invoke(script.main, ["measure", "--labels", str(root / "labels.npz"), "--evalset",
                                           str(root / "evalset.json"), "--store", study["store"].url, "--layer", "1",
                                           "--sae", str(root / "saes" / "000"), "--fidelity", str(bad),
                                           "--out", str(tmp_path / "p.csv")])
    assert res.exit_code == 2 and "000" in res.output and str(bad) in res.output
    assert not (tmp_path / "p.csv").exists()


def test_no_plot_without_values(tmp_path):
    rows = [{"model": "esm2", "layer": 1, "sae": "a", "arch": "relu", "l0": 3.0, "fve": 0.5,
             "dead_frac": 0.0, "dense_frac": 0.0, "loss_recovered": float("nan"), "n_concepts": 2,
             "mean_best_f1": 0.3, "test_f1": 0.2, "chosen": True}]
    write_table(tmp_path / "bench.csv", rows)
    skipped = plot_all(read_table(tmp_path / "bench.csv"), BenchFiles(tmp_path))
    assert list(skipped) == ["pareto_loss_recovered.png"] and "loss_recovered" in skipped["pareto_loss_recovered.png"]
    assert not (tmp_path / "pareto_loss_recovered.png").exists() and (tmp_path / "pareto_fve.png").exists()


def test_pareto_front_hand_example():
    x = np.array([1.0, 2.0, 2.0, 3.0, 5.0])
    y = np.array([0.5, 0.4, 0.7, 0.6, 0.9])
    assert pareto_front(x, y).tolist() == [0, 2, 4]


def test_guards():
    assert small_selection(5) and not small_selection(20)
    rows = [{"model": "m", "kind": "sae", "layer": "2", "name": n, "mean_best_f1": s}
            for n, s in (("b", "0.4"), ("a", "0.4"), ("c", "0.1"))]
    (w,) = selection_ties(rows)
    assert "a, b" in w and "layer 2" in w
    assert not selection_ties(rows[1:])
    (w,) = overlap([("T1", "MKV"), ("T2", "AAA")], [("E1", "MKV"), ("E2", "CCC")])
    assert "E1" in w and "T1" in w and w.startswith("1 of 2")
    assert not overlap([("T1", "MKV")], [("E1", "MKA")])
