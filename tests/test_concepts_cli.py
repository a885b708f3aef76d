"""evaluate_concepts.py end to end on the bundled Swiss-Prot proteins: labels -> split (with a
real extraction through the tiny ESM-2) -> f1 -> select -> report, the counts checked against a
plain NumPy computation; resuming an interrupted F1 pass; bad input exits with status 2."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from interplm_jax.cli import load_script
from interplm_jax.concepts.evalset import EvalSet
from interplm_jax.concepts.f1 import ConceptCounts
from interplm_jax.concepts.labels import ConceptLabels
from interplm_jax.concepts.metrics import mean_best_f1
from interplm_jax.concepts.stream import count_split
from interplm_jax.sae_dir import SavedSAE, save_sae
from interplm_jax.store import ActivationStore
from test_concepts_f1 import numpy_counts

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "evaluate_concepts.py"


def cli():
    return load_script(SCRIPT).main


def run(*args):
    res = CliRunner().invoke(cli(), [str(a) for a in args])
    assert res.exit_code == 0, res.output + repr(res.exception)
    return res


def make_sae(path: Path, d: int, F: int, seed: int, store, layer: int) -> dict:
    """A random ReLU SAE whose scale is 1 / the per-feature max over the store (normalized)."""
    rng = np.random.default_rng(seed)
    p = {"b_pre": rng.normal(size=d).astype(np.float32) * 0.1,
         "W_enc": rng.normal(size=(d, F)).astype(np.float32) / np.sqrt(d),
         "b_enc": np.full(F, -0.05, np.float32),
         "W_dec": rng.normal(size=(F, d)).astype(np.float32)}
    x = store.rows(layer, 0, store.n_tokens)
    mx = np.maximum((x - p["b_pre"]) @ p["W_enc"] + p["b_enc"], 0).max(0)
    p["scale"] = np.where(mx > 0, 1 / np.where(mx > 0, mx, 1), 0).astype(np.float32)
    save_sae(path, SavedSAE("relu", p))
    return p


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, tiny_esm, demo_data):
    out = tmp_path_factory.mktemp("concepts")
    run("labels", "--tsv", demo_data / "uniprotkb_features.tsv.gz", "--out", out / "labels.npz",
        "--min-instances", 3, "--no-require-alphafold", "--max-length", 600)
    run("split", "--labels", out / "labels.npz", "--out", out / "es", "--n-proteins", 40,
        "--min-domains", 3, "--min-residues", 100, "--model", tiny_esm, "--layers", "2",
        "--store", out / "store", "--shard-size", 16)
    store = ActivationStore.open(out / "store")
    saes = {name: make_sae(out / name, 32, 48, seed, store, 2) for name, seed in (("sae_a", 0), ("sae_b", 1))}
    for name in saes:
        for split in ("valid", "test", "select"):
            run("f1", "--labels", out / "labels.npz", "--evalset", out / "es" / "evalset.json",
                "--store", out / "store", "--layer", 2, "--split", split, "--sae", out / name,
                "--out", out / f"{name}_{split}.npz", "--model-name", "tiny", "--chunk-residues", 1500)
    return out, saes


def test_labels_and_split_outputs(pipeline):
    out, _ = pipeline
    summary = json.loads((out / "labels.json").read_text())
    assert summary["n_proteins"] == ConceptLabels.load(out / "labels.npz").n_proteins
    es = EvalSet.load(out / "es" / "evalset.json")
    store = ActivationStore.open(out / "store")
    assert sorted(store.protein_ids) == sorted(es.valid + es.test)
    with open(out / "es" / "concepts_kept.csv") as f:
        assert [r["concept"] for r in csv.DictReader(f)] == list(es.concepts)


def test_f1_counts_equal_a_numpy_computation(pipeline):
    out, saes = pipeline
    labels = ConceptLabels.load(out / "labels.npz")
    es = EvalSet.load(out / "es" / "evalset.json")
    store = ActivationStore.open(out / "store")
    p = saes["sae_a"]
    x = np.concatenate([store.protein(i, 2) for i in es.valid])
    acts = np.maximum((x - p["b_pre"]) @ p["W_enc"] + p["b_enc"], 0) * p["scale"]
    lab = labels.matrix(labels.indices(es.valid), [labels.concepts.index(c) for c in es.concepts]).toarray()
    c = ConceptCounts.load(out / "sae_a_valid.npz")
    tp, fp, hits = numpy_counts(acts, lab, c.thresholds)
    # float32 encoders may differ in the last bit; compare where no value sits on a threshold
    near = ((np.abs(acts[..., None] - c.thresholds) < 1e-5) & (acts[..., None] != 0)).any(-1)
    assert near.sum() < 0.001 * near.size
    ok = ~near.any(0)
    np.testing.assert_array_equal(c.tp[:, ok], tp[:, ok])
    np.testing.assert_array_equal(c.fp[:, ok], fp[:, ok])
    dom = ~c.per_residue  # domain hits are counted for per-domain concepts only
    assert dom.any() and (~dom).any()
    np.testing.assert_array_equal(c.hits[dom][:, ok], hits[dom][:, ok])
    assert (c.hits[~dom] == 0).all()
    assert c.n_proteins == len(es.valid) and c.meta["layer"] == 2 and c.meta["model"] == "tiny"
    assert c.tp.sum() > 0 and (acts > 0).mean() > 0.05


@pytest.mark.parametrize("mode", ["raw-sae", "neurons"])
def test_raw_activations_and_neuron_baseline(pipeline, tmp_path, mode):
    out, saes = pipeline
    args = ["f1", "--labels", out / "labels.npz", "--evalset", out / "es" / "evalset.json",
            "--store", out / "store", "--layer", 2, "--split", "select", "--out", tmp_path / "c.npz"]
    es = EvalSet.load(out / "es" / "evalset.json")
    labels = ConceptLabels.load(out / "labels.npz")
    store = ActivationStore.open(out / "store")
    x = np.concatenate([store.protein(i, 2) for i in es.select])
    if mode == "raw-sae":
        run(*args, "--sae", out / "sae_a", "--activations", "raw")
        p = saes["sae_a"]
        acts = np.maximum((x - p["b_pre"]) @ p["W_enc"] + p["b_enc"], 0)  # no scale
    else:
        lo, hi = x.min(0) + 0.01, x.max(0) - 0.01
        (tmp_path / "stats").mkdir()
        np.save(tmp_path / "stats" / "min.npy", lo)
        np.save(tmp_path / "stats" / "max.npy", hi)
        run(*args, "--neurons", "--neuron-stats", tmp_path / "stats")
        acts = np.clip((x - lo) / (hi - lo), 0, 1)
    c = ConceptCounts.load(tmp_path / "c.npz")
    lab = labels.matrix(labels.indices(es.select), [labels.concepts.index(k) for k in es.concepts]).toarray()
    tp, fp, _ = numpy_counts(acts, lab, c.thresholds)
    near = ((np.abs(acts[..., None] - c.thresholds) < 1e-5) & (acts[..., None] != 0)).any(-1)
    ok = ~near.any(0)
    assert ok.mean() > 0.8 and c.tp.sum() > 0
    np.testing.assert_array_equal(c.tp[:, ok], tp[:, ok])
    np.testing.assert_array_equal(c.fp[:, ok], fp[:, ok])
    assert c.meta["kind"] == ("neurons" if mode == "neurons" else "sae")


def test_select_and_report(pipeline):
    out, _ = pipeline
    run("select", out / "sae_a_select.npz", out / "sae_b_select.npz", "--out", out / "selection.csv")
    with open(out / "selection.csv") as f:
        rows = list(csv.DictReader(f))
    scores = {r["name"]: float(r["mean_best_f1"]) for r in rows}
    expect = {n: mean_best_f1(ConceptCounts.load(out / f"{n}_select.npz")) for n in ("sae_a", "sae_b")}
    assert scores == pytest.approx(expect)
    chosen = [r["name"] for r in rows if r["selected"] == "True"]
    assert chosen == [max(expect, key=expect.get)]
    res = run("report", "--run", f"{out / 'sae_a_valid.npz'},{out / 'sae_a_test.npz'}", "--out", out / "report")
    assert "mean test F1" in res.output
    assert (out / "report" / "concepts_per_layer.png").stat().st_size > 1000
    with open(out / "report" / "summary.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert row["model"] == "tiny" and row["layer"] == "2" and row["kind"] == "sae"
    # tables named by model, kind, layer and SAE, so that two SAEs of a layer never share one
    assert (out / "report" / f"per_concept_tiny_sae_L2_{row['name']}.csv").is_file()
    assert f"tiny_sae_L2_{row['name']}: mean test F1" in res.output


def test_interrupted_f1_pass_resumes_to_the_same_counts(pipeline, tmp_path):
    out, saes = pipeline
    labels = ConceptLabels.load(out / "labels.npz")
    es = EvalSet.load(out / "es" / "evalset.json")
    store = ActivationStore.open(out / "store")
    p = saes["sae_b"]

    def enc(x):
        return np.maximum((x - p["b_pre"]) @ p["W_enc"] + p["b_enc"], 0) * p["scale"]

    calls = {"n": 0}

    def failing(x):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return enc(x)

    ck = tmp_path / "ck.npz"
    args = (store, 2, labels, es, "valid")
    with pytest.raises(KeyboardInterrupt):
        count_split(*args, failing, 48, chunk_residues=1000, checkpoint=ck, checkpoint_every_s=0, features_id="b")
    assert ck.exists()
    calls["n"] = -1000
    resumed = count_split(*args, failing, 48, chunk_residues=1000, checkpoint=ck, features_id="b")
    assert calls["n"] < -1000 + 40 and not ck.exists()  # fewer chunks than a full pass
    whole = count_split(*args, enc, 48, chunk_residues=1000)
    for k in ("tp", "fp", "hits", "n_residues", "n_domains"):
        np.testing.assert_array_equal(getattr(resumed, k), getattr(whole, k))
    assert resumed.n_proteins == whole.n_proteins == len(es.valid)


def test_worker_parts_merge_to_the_whole(pipeline, tmp_path):
    out, _ = pipeline
    args = ["f1", "--labels", out / "labels.npz", "--evalset", out / "es" / "evalset.json",
            "--store", out / "store", "--layer", 2, "--split", "valid", "--sae", out / "sae_a",
            "--chunk-residues", 1500]
    for i in range(3):
        run(*args, "--worker", f"{i}/3", "--out", tmp_path / f"part{i}.npz")
    parts = [ConceptCounts.load(tmp_path / f"part{i}.npz") for i in range(3)]
    assert all(0 < p.n_proteins < 20 for p in parts)
    run("merge", *(tmp_path / f"part{i}.npz" for i in (2, 0, 1)), "--out", tmp_path / "all.npz")
    merged, whole = ConceptCounts.load(tmp_path / "all.npz"), ConceptCounts.load(out / "sae_a_valid.npz")
    for k in ("tp", "fp", "hits", "n_residues", "n_domains"):
        np.testing.assert_array_equal(getattr(merged, k), getattr(whole, k))
    assert merged.n_proteins == whole.n_proteins and "worker" not in merged.meta
    res = CliRunner().invoke(cli(), ["merge", str(tmp_path / "part0.npz"), "--out", str(tmp_path / "x.npz")])
    assert res.exit_code == 2 and "expected each of" in res.output


def test_bad_input_exits_with_status_2(pipeline, tmp_path):
    out, _ = pipeline
    bad = tmp_path / "bad.tsv"
    bad.write_text("Entry\tLength\tSequence\tHelix\nX1\t3\tMKV\tHELIX 2..9\n")
    res = CliRunner().invoke(cli(), ["labels", "--tsv", str(bad), "--out", str(tmp_path / "l.npz")])
    assert res.exit_code == 2 and "protein 'X1', column 'Helix'" in res.output
    assert not (tmp_path / "l.npz").exists()
    res = CliRunner().invoke(cli(), ["f1", "--labels", str(out / "labels.npz"), "--evalset",
                                     str(out / "es" / "evalset.json"), "--store", str(out / "store"),
                                     "--layer", "2", "--split", "valid", "--out", str(tmp_path / "c.npz")])
    assert res.exit_code == 2 and "exactly one of --sae" in res.output


@pytest.mark.parametrize("kill_at", ["interplm_jax.concepts.report:write_csv",
                                     "interplm_jax.concepts.f1:ConceptCounts.save"])
def test_a_kill_while_writing_counts_loses_no_table(pipeline, tmp_path, kill_at):
    """Counts file and table are complete together or not at all: the counts file (whose
    presence tells the pipeline the run is done) is written last."""
    from _faults import run_killed_at, was_killed

    out, _ = pipeline
    dest = tmp_path / "esm2_L2_sae_a_select.npz"
    call = (f"from interplm_jax.concepts.config import ConceptsConfig\n"
            f"from interplm_jax.concepts.run import count_f1\n"
            f"count_f1({str(out / 'labels.npz')!r}, {str(out / 'es' / 'evalset.json')!r}, "
            f"{str(out / 'store')!r}, 2, 'select', {str(dest)!r}, "
            f"ConceptsConfig(chunk_residues=1500), sae={str(out / 'sae_a')!r})")
    proc = run_killed_at(kill_at, call)
    assert was_killed(proc), proc.stderr
    table = dest.with_suffix(".csv")
    assert not dest.exists() or table.exists()
    if not dest.exists():  # what the pipeline's rerun does
        run("f1", "--labels", out / "labels.npz", "--evalset", out / "es" / "evalset.json",
            "--store", out / "store", "--layer", 2, "--split", "select", "--sae", out / "sae_a",
            "--out", dest, "--chunk-residues", 1500)
    assert table.read_text() == (out / "sae_a_select.csv").read_text()
