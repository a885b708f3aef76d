"""scripts/pipeline.py end to end on the bundled demo data (test sizes): killed once during
training and resumed; every stage's outputs checked against independent computations."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from _study import PIPELINE, pipeline
from interplm_jax.bench.causal import read_causal, read_pairs
from interplm_jax.cli import load_script
from interplm_jax.errors import InputError
from interplm_jax.report import page_data
from interplm_jax.sae_dir import load_sae
from interplm_jax.store import ActivationStore
from interplm_jax.study import STAGES, StudyLayout

pytestmark = pytest.mark.slow


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_killed_mid_training_then_resumed(demo_study):
    assert demo_study.killed, demo_study.killed_log
    log = demo_study.resumed_log
    for stage in ("model", "extract", "evalset"):
        assert f"{stage}: done, skipped" in log
    for stage in STAGES[STAGES.index("train"):]:
        assert f"{stage}: running" in log and f"{stage}: finished" in log
    for variant in ("model", "shuffled", "random_init"):
        for layer in (2, 4):
            rows = [json.loads(line) for line in
                    (demo_study.out / variant / "sweeps" / f"layer_{layer}" / "metrics.jsonl").open()]
            for sae in {r["sae"] for r in rows}:  # each logged step once per SAE, up to the end
                steps = [r["step"] for r in rows if r["sae"] == sae]
                assert steps == list(range(20, 201, 20)), (variant, layer, sae, steps)


def test_evaluation_store_holds_the_eval_set(demo_study):
    out = StudyLayout(demo_study.out)
    evalset = json.loads((out.concepts / "set" / "evalset.json").read_text())
    ev, train, shuffled, random_init = (ActivationStore.open(p) for p in (
        out.eval_store("model"), out.store("model"), out.eval_store("shuffled"), out.eval_store("random_init")))
    assert set(ev.protein_ids) == set(evalset["valid"]) | set(evalset["test"])
    pid = ev.protein_ids[3]
    # same model, same protein, other batch: the same hidden states; the control models' differ
    np.testing.assert_allclose(ev.protein(pid, 4), train.protein(pid, 4), atol=2e-5)
    for control in (shuffled, random_init):
        assert not np.allclose(control.protein(pid, 4), ev.protein(pid, 4), atol=1e-2)


def test_chosen_sae_normalized_on_the_eval_store(demo_study):
    out = StudyLayout(demo_study.out)
    sel = _rows(out.selection)
    for kind in ("sae", "shuffled", "random_init"):
        for layer in (2, 4):
            cands = [r for r in sel if r["kind"] == kind and int(r["layer"]) == layer]
            best = max(cands, key=lambda r: float(r["mean_best_f1"]))
            assert [r["name"] for r in cands if r["selected"] == "True"] == [best["name"]]
    sae = load_sae(out.chosen("sae")[4])
    p = sae.params
    ev = ActivationStore.open(out.eval_store("model"))
    x = ev.rows(4, 0, ev.n_tokens)
    raw = np.maximum((x - p["b_pre"]) @ p["W_enc"] + p["b_enc"], 0)  # NumPy, independent of JAX
    mx = raw.max(0)
    expect = np.where(mx > 0, 1 / np.where(mx > 0, mx, 1), 0)
    np.testing.assert_allclose(p["scale"], expect, rtol=1e-4)


def test_concept_report_has_every_baseline(demo_study):
    out = StudyLayout(demo_study.out)
    summary = _rows(out.concepts / "report" / "summary.csv")
    assert sorted((r["kind"], int(r["layer"])) for r in summary) == sorted(
        (k, L) for k in ("sae", "shuffled", "random_init", "neurons") for L in (2, 4))
    neurons = load_sae(out.neurons(4))
    assert neurons.arch == "neuron" and neurons.params["W_enc"].shape == (32, 32)
    for L in (4,):  # analysis_layers
        assert (out.analysis(L) / f"spatial_layer{L}.tsv").is_file()
        assert (out.analysis(L) / "feature_map.tsv").is_file()
        assert (out.annotate(L) / "dry_run" / "estimate_features.json").is_file()


def test_bench_table_of_every_sae(demo_study):
    """bench.csv: a row per SAE, model and layer and per neuron baseline; the chosen SAE's L0 and
    FVE equal NumPy on the test proteins' rows and its loss recovered the fidelity code's, for
    the main model and for each control model."""
    out = StudyLayout(demo_study.out)
    rows = _rows(out.bench.table)
    models = ("model", "shuffled", "random_init")
    assert sorted((r["model"], r["layer"], r["sae"]) for r in rows) == sorted(
        [(m, str(L), s) for m in models for L in (2, 4) for s in ("sae000", "sae001")]
        + [("model", str(L), "neurons") for L in (2, 4)])
    for model, kind, lm in zip(models, ("sae", "shuffled", "random_init"),
                               ("tiny-esm2", "shuffled", "random_init")):
        chosen = out.chosen(kind)[4]
        (row,) = [r for r in rows if r["model"] == model and r["layer"] == "4" and r["chosen"] == "True"]
        assert row["sae"] == chosen.name
        _check_bench_row(out, row, chosen, out.eval_store(model), out.model(lm))
    for y in ("fve", "loss_recovered", "n_concepts"):
        assert out.bench.pareto(y).stat().st_size > 1000
    assert out.bench.probes_plot.stat().st_size > 1000
    probes = {(r["model"], r["layer"], r["probe"], r["k"]) for r in _rows(out.bench.probes_summary)}
    chosen = out.chosen("sae")[4]
    assert ("model", "4", chosen.name, "10") in probes and ("shuffled", "2", "neurons", "1") in probes
    assert ("random_init", "4", out.chosen("random_init")[4].name, "10") in probes
    warnings = json.loads(out.bench.warnings.read_text())
    assert any("selection split has" in w for w in warnings)  # the demo's 9 selection proteins
    causal = read_causal(out.bench.causal)  # causal.layers [4], max_concepts 2: the chosen SAE's best two
    pairs = read_pairs(out.concept_report.per_concept(f"demo_sae_L4_{chosen.name}"), 0.0, 2)
    assert [(r["model"], r["layer"], r["sae"], r["concept"], r["feature"]) for r in causal] == [
        ("model", 4, chosen.name, p.concept, p.feature) for p in pairs]
    for r in causal:
        assert 1 <= r["n_proteins"] <= 2 and r["null_size"] == 20 and 1 / 21 <= r["p_zero"] <= r["q_zero"] <= 1


def _check_bench_row(out: StudyLayout, row: dict, sae_dir, store, model_dir) -> None:
    """L0 and FVE of a bench row == NumPy on the test proteins' rows of ``store``; its loss
    recovered == the fidelity code's on the model at ``model_dir``."""
    from interplm_jax.concepts.evalset import EvalSet
    from interplm_jax.concepts.labels import ConceptLabels
    from torch_bridge.fidelity import fidelity_table
    from torch_bridge.models import load_masked_lm
    from torch_bridge.sae import TorchSAE

    es = EvalSet.load(out.concepts / "set" / "evalset.json")
    ev = ActivationStore.open(store)
    x = np.concatenate([ev.protein(p, 4) for p in es.test]).astype(np.float64)
    p = load_sae(sae_dir).params
    f = np.maximum((x - p["b_pre"]) @ p["W_enc"] + p["b_enc"], 0)
    x_hat = f @ p["W_dec"] + p["b_pre"]
    assert float(row["l0"]) == pytest.approx((f > 0).sum(1).mean(), rel=1e-5)
    assert float(row["fve"]) == pytest.approx(1 - ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum(), rel=1e-4)
    labels = ConceptLabels.load(out.concepts / "labels.npz")
    seqs = [labels.sequence(int(i)) for i in labels.indices(es.test)][:20]  # fidelity.max_proteins
    lm, tok = load_masked_lm(str(model_dir))
    (fid,) = fidelity_table(lm, tok, seqs, 4, {"c": TorchSAE.from_saved(load_sae(sae_dir))})
    assert float(row["loss_recovered"]) == pytest.approx(fid.loss_recovered, rel=1e-4)


def test_random_init_model_is_fresh_and_reproducible(demo_study):
    """The random_init control: the config of the study's model, other weights than it, the
    very weights random_init(model, seed) gives for the seed its record holds."""
    import torch

    from torch_bridge.models import load_masked_lm, random_init

    out = StudyLayout(demo_study.out)
    record = json.loads((out.model("random_init") / "random_init.json").read_text())
    assert record["seed"] == 5 and record["family"] == "esm2"  # study.random_init_seed of _study.py
    assert record["source"] == str(out.model("tiny-esm2"))
    saved, _ = load_masked_lm(str(out.model("random_init")))
    trained, _ = load_masked_lm(str(out.model("tiny-esm2")))
    again, _ = random_init(out.model("tiny-esm2"), record["seed"])
    config = [{k: v for k, v in m.config.to_dict().items() if k != "_name_or_path"} for m in (saved, trained)]
    assert config[0] == config[1]
    t, a = trained.state_dict(), again.state_dict()
    for name, w in saved.state_dict().items():
        assert torch.equal(w, a[name]), name
        if w.ndim == 2:  # every weight matrix differs from the trained model's
            assert not torch.equal(w, t[name]), name


def test_rerun_skips_every_stage(demo_study):
    out = StudyLayout(demo_study.out)
    before = out.selection.stat().st_mtime_ns
    log = pipeline(demo_study.config, demo_study.out).stdout
    assert all(f"{s}: done, skipped" in log for s in STAGES), log
    assert out.selection.stat().st_mtime_ns == before


def _cli(*args):
    return CliRunner().invoke(load_script(PIPELINE).main, [str(a) for a in args])


def test_changed_config_is_refused_and_planned(demo_study, tmp_path):
    cfg = yaml.safe_load(demo_study.config.read_text())
    cfg["train"]["steps"] = 300
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(cfg))
    r = _cli("--config", changed, "--out", demo_study.out)
    assert r.exit_code == 2
    assert "stage 'train' was run with other settings (changed: train)" in r.output
    assert "--redo train" in r.output
    plan = _cli("--config", changed, "--out", demo_study.out, "--plan").output.split("\n")
    status = dict(line.split() for line in plan if line.strip())
    assert status == {s: ("done" if STAGES.index(s) < STAGES.index("train") else "changed") for s in STAGES}


def test_redo_reruns_that_stage_and_later(demo_study):
    log = pipeline(demo_study.config, demo_study.out, "--redo", "annotate").stdout
    assert "analysis: done, skipped" in log
    assert "annotate: running" in log and "report: running" in log


def test_out_defaults_to_the_study_name(tmp_path, monkeypatch):
    from _study import small_config

    config = small_config(tmp_path / "c.yaml")
    monkeypatch.chdir(tmp_path)
    r = _cli("--config", config, "--plan")  # DESIGN's contract: pipeline.py --config CONFIG.yaml
    assert r.exit_code == 0, r.output
    assert dict(line.split() for line in r.output.splitlines()) == {s: "todo" for s in STAGES}
    assert not (tmp_path / "out" / "demo" / "pipeline").exists()  # --plan writes nothing


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.pop("study"), "no study: section"),
    (lambda c: c["study"].update(train_fasta="nowhere.fasta"), "nowhere.fasta not found"),
    (lambda c: c["study"].update(baselines=["random"]), "unknown baseline(s) ['random']"),
])
def test_bad_study_config(tmp_path, edit, message):
    from _study import small_config

    cfg = yaml.safe_load(small_config(tmp_path / "c.yaml").read_text())
    edit(cfg)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    r = _cli("--config", tmp_path / "c.yaml", "--out", tmp_path / "out")
    assert r.exit_code == 2 and message in r.output, r.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["demo", "esm2_8m", "esm2_650m", "esmc_300m"])
def test_every_config_section_parses(name):
    from _study import REPO

    module = load_script(PIPELINE)
    path = REPO / "configs" / f"{name}.yaml"
    data = yaml.safe_load(path.read_text())
    parsed = module.parse_sections(path, data)  # every section through its dataclass
    assert set(data) <= set(parsed)
    assert set(data) >= {"study", "extract", "train", "concepts", "analysis", "annotate", "normalize"}
    bad = dict(data, annotate={**data["annotate"], "selection": {"no_such_key": 1}})
    with pytest.raises(InputError, match=r"annotate.*no_such_key"):
        module.parse_sections(path, bad)


def test_report_page_of_the_study(demo_study):
    out = StudyLayout(demo_study.out)
    page = (out.report / "index.html").read_text()
    data = page_data(page)
    assert [d["layer"] for d in data["layers"]] == [2, 4]
    assert [d["sae"] for d in data["layers"]] == [out.chosen("sae")[L].name for L in (2, 4)]


def _report_shows_the_study(out: StudyLayout) -> None:
    data = page_data(out.report_page.read_text())
    assert data["model_family"] == "ESM-2"
    assert [d["sae"] for d in data["layers"]] == [out.chosen("sae")[L].name for L in (2, 4)]
    by_concept = data["layers"][-1]["concepts"]["by_concept"]
    assert set(by_concept) == {"sae", "neurons", "shuffled", "random_init"}


def test_a_moved_study_resumes_and_reports(demo_study, tmp_path):
    """The study directory moved (the original hidden meanwhile, so that no path into it
    resolves): every stage is still done, selection.csv's counts files are found in the new
    place, and the report is rebuilt there by the pipeline and by scripts/report.py --study."""
    import shutil
    import subprocess
    import sys

    from _study import REPO, _env
    from interplm_jax.layout import read_selection

    moved = tmp_path / "moved"
    shutil.copytree(demo_study.out, moved)
    hidden = demo_study.out.rename(demo_study.out.with_name("hidden-while-moved"))
    try:
        out = StudyLayout(moved)
        counts = [r["counts"] for r in read_selection(out.selection)]
        assert len(counts) == 3 * 2 * 2 and all(c.is_file() and c.parent == out.f1_dir for c in counts)
        log = pipeline(demo_study.config, moved, "--redo", "report").stdout
        assert "bench: done, skipped" in log and "report: finished" in log
        _report_shows_the_study(out)
        r = subprocess.run([sys.executable, str(REPO / "scripts" / "report.py"), "--study", str(moved),
                            "--out", str(tmp_path / "page")], capture_output=True, text=True, env=_env())
        assert r.returncode == 0, r.stderr
        assert page_data((tmp_path / "page" / "index.html").read_text())["layers"][-1]["sae"] == \
            out.chosen("sae")[4].name
    finally:
        hidden.rename(demo_study.out)


def test_a_study_with_the_old_names_resumes_and_reports(demo_study, tmp_path):
    """A study made before the main model's variant was named ``model``: ``esm2/``,
    ``models/shuffled-esm2``, ``concepts/f1/esm2_*``, bench parts of model ``esm2``, absolute
    counts paths in selection.csv. Its stages stay done; a bench part removed (an interrupted
    bench stage) is measured again under the old names; the report is rebuilt."""
    import shutil

    from interplm_jax.concepts.report import write_csv
    from interplm_jax.layout import read_selection

    old = tmp_path / "old"
    shutil.copytree(demo_study.out, old)
    (old / "model").rename(old / "esm2")
    (old / "models" / "shuffled").rename(old / "models" / "shuffled-esm2")
    for d in ("concepts/f1", "bench/parts", "bench/fidelity"):
        for p in (old / d).glob("model_*"):
            p.rename(p.with_name("esm2_" + p.name[len("model_"):]))
    for p in (old / "bench" / "parts").glob("*.csv"):
        rows = _rows(p)
        write_csv(p, [{**r, "model": "esm2" if r["model"] == "model" else r["model"]} for r in rows], list(rows[0]))
    out = StudyLayout(old)
    rows = read_selection(out.selection)
    for r in rows:  # absolute paths, as they were written
        r["counts"] = str(r["counts"]).replace("/model_", "/esm2_")
    write_csv(out.selection, rows, list(rows[0]))
    assert out.main == "esm2"
    (old / "bench" / "parts" / "esm2_L4_saes.csv").unlink()
    for stage in ("bench", "report"):
        (out.ledger / f"{stage}.json").unlink()

    log = pipeline(demo_study.config, old).stdout
    assert "concepts: done, skipped" in log and "bench: finished" in log and "report: finished" in log
    assert not (old / "model").exists() and (old / "bench" / "parts" / "esm2_L4_saes.csv").is_file()
    new = {(r["model"], r["layer"], r["sae"]): r for r in _rows(out.bench.table)}
    before = {(r["model"], r["layer"], r["sae"]): r for r in _rows(StudyLayout(demo_study.out).bench.table)}
    assert {k[0] for k in new} == {"esm2", "shuffled", "random_init"}
    for (model, layer, sae), r in before.items():
        again = new[("esm2" if model == "model" else model, layer, sae)]
        assert {k: again[k] for k in r if k != "model"} == {k: v for k, v in r.items() if k != "model"}
    _report_shows_the_study(out)


def test_annotate_stage_calls_claude_when_a_key_is_set(demo_study, tmp_path):
    """With ANTHROPIC_API_KEY set the annotate stage describes and validates features through the
    real anthropic SDK (against a local server speaking the Messages API), and the report shows
    the descriptions; the key never reaches a file."""
    import re
    import shutil

    from _anthropic_server import MessagesServer

    study = tmp_path / "study"
    shutil.copytree(demo_study.out, study)

    def claude(body, n):
        prompt = body["messages"][0]["content"]
        f = int(re.search(r"[Ff]eature (\d+)", prompt).group(1))
        if "<predictions>" not in prompt:
            return (f"<description>\nFeature {f} fires on cysteines.\n</description>\n"
                    f"<summary>Cysteine feature {f}.</summary>")
        ids = re.findall(r"^Protein id: (\S+)$", prompt, flags=re.M)
        return "<predictions>\n" + "\n".join(f"{p}: {len(p) % 7 / 7:.1f}" for p in ids) + "\n</predictions>"

    key = "sk-ant-test-pipeline-0123456789"
    with MessagesServer(claude) as srv:
        cfg = yaml.safe_load(demo_study.config.read_text())
        cfg["study"]["annotate"] = "auto"
        cfg["annotate"]["llm"].update(base_url=srv.url, max_retries=1)
        config = tmp_path / "with_llm.yaml"
        config.write_text(yaml.safe_dump(cfg))
        log = pipeline(config, study, "--redo", "annotate", env={"ANTHROPIC_API_KEY": key}).stdout
        n_requests = srv.count
    assert "concepts: done, skipped" in log and "annotate: running" in log
    out = StudyLayout(study)
    described = [r for r in _rows(out.annotate(4) / "descriptions.csv") if r["status"] == "ok"]
    validated = _rows(out.annotate(4) / "validation.csv")
    assert described and n_requests == len(described) + len(validated)
    assert {r["summary"] for r in described} == {f"Cysteine feature {r['feature']}." for r in described}
    page = (out.report / "index.html").read_text()
    data = page_data(page)
    shown = data["layers"][-1]["descriptions"]
    assert {int(f) for f in shown} == {int(r["feature"]) for r in described}
    assert not any(key in p.read_text(errors="ignore") for p in study.rglob("*") if p.is_file()
                   and p.stat().st_size < 5e6)
    assert key not in json.dumps(data)  # the page's data is compressed: look inside too


def test_logs_are_quiet_and_informative(demo_study):
    """At the default level: no orbax/absl chatter, no missing-metadata warnings from reading a
    sweep, no libtpu line; UMAP and HDBSCAN say how long they took; the concept report names
    each SAE; structures_layer<L>.tsv names the file each structure was read from."""
    for log in (demo_study.killed_log, demo_study.resumed_log):
        assert "Metadata file does not exist" not in log
        assert "libtpu" not in log and " INFO absl:" not in log
    assert "UMAP done in" in demo_study.resumed_log and "HDBSCAN:" in demo_study.resumed_log
    out = StudyLayout(demo_study.out)
    chosen = {L: sae.name for L, sae in out.chosen("sae").items()}
    for L, name in chosen.items():
        assert f"demo_sae_L{L}_{name}: mean test F1" in demo_study.resumed_log
    assert f"demo_neurons_L{L}_neurons: mean test F1" in demo_study.resumed_log
    from pathlib import Path

    from interplm_jax.analysis.tables import read_table

    t = read_table(out.analysis(4) / "structures_layer4.tsv")
    assert {Path(f).name for f, s in zip(t["file"], t["status"]) if s == "used"} == {
        "O15552.cif.gz", "Q7Z6M3.pdb.gz"}


def test_tiny_esmc_study_builds_its_model_and_extracts(tmp_path):
    """extract.model: tiny-esmc runs the study on the locally built ESM C (first two stages),
    its random-init control an ESM C too."""
    from _study import small_config

    cfg = yaml.safe_load(small_config(tmp_path / "c.yaml").read_text())
    cfg["extract"]["model"] = "tiny-esmc"
    cfg["study"]["baselines"] = ["random_init"]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    r = _cli("--config", tmp_path / "c.yaml", "--out", tmp_path / "out", "--until", "extract")
    assert r.exit_code == 0, r.output
    out = StudyLayout(tmp_path / "out")
    assert (out.model("tiny-esmc") / "config.json").is_file()
    assert json.loads((out.model("random_init") / "random_init.json").read_text())["family"] == "esmc"
    for variant in ("model", "random_init"):
        model = ActivationStore.open(out.store(variant)).manifest["model"]
        assert model["model_family"] == "esmc" and "esmc.norm" in model["layer_semantics"]


def test_a_same_size_edit_of_an_input_file_is_seen(tmp_path):
    """Stage markers record input files by content: an edit that keeps the size (one residue
    for another) makes extract and every later stage 'changed', not 'done'."""
    import gzip

    from _study import small_config
    from interplm_jax.study import Ledger

    module = load_script(PIPELINE)
    config = small_config(tmp_path / "c.yaml")
    cfg = yaml.safe_load(config.read_text())
    fasta = tmp_path / "train.fasta"
    fasta.write_bytes(gzip.decompress(open(cfg["study"]["train_fasta"], "rb").read()))
    cfg["study"]["train_fasta"] = str(fasta)
    config.write_text(yaml.safe_dump(cfg))
    s = module.load_study(config, tmp_path / "out")
    for stage, inputs in s.inputs().items():
        Ledger(s.out.ledger).mark(stage, inputs)
    text = fasta.read_text()
    i = text.index("\n") + 1  # the first residue of the first protein
    fasta.write_text(text[:i] + ("G" if text[i] == "A" else "A") + text[i + 1:])
    r = _cli("--config", config, "--out", tmp_path / "out", "--plan")
    assert r.exit_code == 0, r.output
    status = dict(line.split() for line in r.output.splitlines())
    assert status == {st: "done" if st == "model" else "changed" for st in STAGES}
