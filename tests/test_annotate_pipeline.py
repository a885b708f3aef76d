"""features -> validate -> categorise end to end: demo proteins, a real activation store, a
random SAE, and the real anthropic SDK talking to a local Messages API server."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
from click.testing import CliRunner

from _anthropic_server import MessagesServer, rate_limited
from interplm_jax.cli import load_script
from interplm_jax.annotate.activations import sae_encoder
from interplm_jax.annotate.config import (AnnotateConfig, CategoriseConfig, LLMConfig,
                                          SelectionConfig)
from interplm_jax.annotate.metadata import read_uniprot_tsv
from interplm_jax.annotate.pipeline import run_categorise, run_features, run_validate
from interplm_jax.sae_dir import SavedSAE, save_sae
from interplm_jax.store import write_store

KEY = "sk-ant-pipeline-test-KEY-42"
LAYER = 3
D, F = 16, 48
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, demo_data):
    """Store of random activations for the demo proteins <= 1,022 aa, and a normalized SAE."""
    meta = read_uniprot_tsv(demo_data / "uniprotkb_features.tsv.gz")
    ids = [p for p, info in meta.items() if info.length <= 1022]
    rng = np.random.default_rng(0)
    # a per-protein offset makes maxima differ between proteins, as real features do; every
    # third protein is quiet, so that every feature has zero-activation proteins
    acts = [((rng.normal(size=(meta[p].length, D)) + rng.normal(size=D) * 0.3)
             * (0.1 if i % 3 == 0 else 1.0)).astype(np.float32) for i, p in enumerate(ids)]
    store = write_store(tmp_path_factory.mktemp("store") / "s", ids, {LAYER: acts}, shard_size=40)
    params = {"b_pre": rng.normal(size=D).astype(np.float32) * 0.1,
              "W_enc": rng.normal(size=(D, F)).astype(np.float32) / np.sqrt(D),
              "b_enc": np.full(F, -0.5, np.float32),
              "W_dec": rng.normal(size=(F, D)).astype(np.float32),
              "scale": np.ones(F, np.float32)}
    raw = sae_encoder(params, np.arange(F))(np.concatenate(acts))
    params["scale"] = (1.0 / raw.max(axis=0)).astype(np.float32)  # per-feature max scaling
    return store, params, acts, demo_data / "uniprotkb_features.tsv.gz"


def cfg_for(url: str, **llm) -> AnnotateConfig:
    return AnnotateConfig(selection=SelectionConfig(feature_fraction=0.25, seed=3),
                          llm=LLMConfig(base_url=url, max_retries=2, concurrency=3, **llm))


class FakeClaude:
    """Answers description and validation prompts; misbehaves for chosen features."""

    def __init__(self):
        self.truth: dict[str, float] = {}
        self.bad_description: set[int] = set()
        self.constant: set[int] = set()
        self.garbled: set[int] = set()
        self.throttle_first = True

    def __call__(self, body, n):
        if self.throttle_first and n == 1:
            return rate_limited()
        prompt = body["messages"][0]["content"]
        f = int(re.search(r"[Ff]eature (\d+)", prompt).group(1))
        if "<predictions>" not in prompt:
            if f in self.bad_description:
                return "This feature is hard to describe."
            return f"<description>\nFeature {f} fires on things.\n</description>\n<summary>Summary {f}.</summary>"
        ids = re.findall(r"^Protein id: (\S+)$", prompt, flags=re.M)
        if f in self.garbled:
            return "<predictions>\n" + "\n".join(f"{p}: high" for p in ids) + "\n</predictions>"
        lines = [f"{p}: {0.5 if f in self.constant else round(self.truth[f'{f}/{p}'], 1)}"
                 for p in ids]
        return "<predictions>\n" + "\n".join(lines) + "\n</predictions>"


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_features_then_validate(setup, tmp_path, monkeypatch):
    store, params, acts, tsv = setup
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    fake = FakeClaude()
    out = tmp_path / "run"
    with MessagesServer(fake) as srv:
        cfg = cfg_for(srv.url)
        # dry run first: prompts and estimates, no request, no key needed
        monkeypatch.delenv("ANTHROPIC_API_KEY")
        dry = run_features(out, cfg, tsv, store, LAYER, params, dry_run=True)
        monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
        assert srv.count == 0 and dry["features"]["to_request"] > 0
        examples = json.loads((out / "examples.json").read_text())["features"]
        kept = [e["feature"] for e in examples if not e["excluded"]]
        assert len(examples) == 12 and len(kept) >= 4
        assert len(list((out / "dry_run" / "prompts").glob("describe-*.txt"))) == len(kept)

        fake.bad_description = {kept[0]}
        fake.constant = {kept[1]}
        fake.garbled = {kept[2]}
        res = run_features(out, cfg, tsv, store, LAYER, params)
        n_describe = srv.count
        assert res["descriptions"]["failed"] == 1 and res["descriptions"]["ok"] == len(kept) - 1
        assert n_describe == len(kept) + 1  # one 429 retried

        for e in examples:
            for ex in e["eval"]:
                fake.truth[f"{e['feature']}/{ex['protein']}"] = ex["activation"]
        val = run_validate(out, cfg)
        n_validate = srv.count - n_describe
        assert n_validate == len(kept) - 1
        # a rerun is served from the cache, except the requests whose answers were unusable
        run_features(out, cfg, tsv, store, LAYER, params)
        run_validate(out, cfg)
        assert srv.count == n_describe + n_validate + 2

    # measured activations are the per-protein maxima from the store (independent NumPy)
    cols = {f: k for k, f in enumerate(sorted(e["feature"] for e in examples))}
    feats = np.array(sorted(cols))
    enc = sae_encoder(params, feats)
    ids = store.protein_ids
    for e in examples[:3]:
        for ex in e["train"][:5] + e["eval"][:5]:
            a = enc(acts[ids.index(ex["protein"])])[:, cols[e["feature"]]]
            assert ex["activation"] == pytest.approx(float(a.max()), rel=1e-5)

    desc = {int(r["feature"]): r for r in read_rows(out / "descriptions.csv")}
    assert desc[kept[0]]["status"] == "failed" and "unparseable" in desc[kept[0]]["error"]
    assert desc[kept[3]]["summary"] == f"Summary {kept[3]}."
    failed = [json.loads(x) for x in (out / "failures_features.jsonl").read_text().splitlines()]
    assert failed == [{"label": f"describe-{kept[0]}", "error": desc[kept[0]]["error"],
                       "text": "This feature is hard to describe."}]
    rows = {int(r["feature"]): r for r in read_rows(out / "validation.csv")}
    preds = read_rows(out / "predictions.csv")
    assert rows[kept[1]]["status"] == "undefined" and rows[kept[2]]["status"] == "failed"
    for f in kept[3:]:
        m = [float(p["measured"]) for p in preds if int(p["feature"]) == f]
        p_ = [float(p["predicted"]) for p in preds if int(p["feature"]) == f]
        assert float(rows[f]["pearson_r"]) == pytest.approx(scipy.stats.pearsonr(p_, m)[0], abs=1e-9)
        assert float(rows[f]["pearson_r"]) > 0.9  # predictions were the rounded truth
    assert val["validation"]["ok"] == len(kept) - 3
    assert (out / "validation_hist.png").read_bytes()[:4] == b"\x89PNG"
    auto = read_rows(out / "LLM_Autointerp.csv")
    assert sorted(int(r["Feature"]) for r in auto) == sorted(kept[3:])
    for path in out.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


def test_categorise_end_to_end_and_cli(tmp_path, monkeypatch):
    concepts = {"esm2_8m": ["Domain_DRBM", "Zinc finger_C2H2-type", "Active site_any"],
                "esm2_650m": ["Domain_DRBM", "Helix", "Signal peptide_any", "Motif_DEAD box"]}
    cats = {"Domain_DRBM": "Domains", "Zinc finger_C2H2-type": "Domains", "Motif_DEAD box": "Motifs",
            "Active site_any": "Sites", "Helix": "Structure", "Signal peptide_any": "Nonsense"}

    def claude(body, n):
        prompt = body["messages"][0]["content"]
        if "Propose between" in prompt:
            return ('<answer>[{"name": "Domains", "definition": "d"}, {"name": "Motifs", '
                    '"definition": "m"}, {"name": "Sites", "definition": "s"}, {"name": '
                    '"Structure", "definition": "x"}, {"name": "Other", "definition": "o"}]</answer>')
        names = [c for c in cats if c in prompt]
        if "Assign each" in prompt:
            return "<answer>" + json.dumps({c: cats[c] for c in names}) + "</answer>"
        return "<answer>" + json.dumps({c: f"about {c}" for c in names}) + "</answer>"

    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    files = []
    for model, names in concepts.items():
        path = tmp_path / f"{model}.txt"
        path.write_text("\n".join(names) + "\n")
        files.append(f"{model}={path}")
    with MessagesServer(claude) as srv:
        cfg = AnnotateConfig(llm=LLMConfig(base_url=srv.url, max_retries=1),
                             categorise=CategoriseConfig(batch_size=4))
        res = run_categorise(tmp_path / "out", cfg,
                             {m: list(v) for m, v in concepts.items()})
        assert srv.count == 2 + 1 + 2  # describe in 2 batches, categories, assign in 2 batches
    rows = {r["concept"]: r for r in read_rows(tmp_path / "out" / "concept_categories.csv")}
    assert rows["Domain_DRBM"] == {"concept": "Domain_DRBM", "description": "about Domain_DRBM",
                                   "category": "Domains", "models": "esm2_8m;esm2_650m",
                                   "status": "ok"}
    assert rows["Signal peptide_any"]["category"] == "unassigned"  # "Nonsense" is no category
    counts = {r["category"]: r for r in read_rows(tmp_path / "out" / "category_counts.csv")}
    # by hand: 8m has DRBM + C2H2 (Domains), Active site (Sites); 650m has DRBM (Domains),
    # DEAD box (Motifs), Helix (Structure), Signal peptide (unassigned)
    assert {c: (int(r["esm2_8m"]), int(r["esm2_650m"])) for c, r in counts.items()} == {
        "Domains": (2, 1), "Motifs": (0, 1), "Sites": (1, 0), "Structure": (0, 1),
        "Other": (0, 0), "unassigned": (0, 1)}
    assert res["categories"] == 5
    assert (tmp_path / "out" / "category_counts.png").read_bytes()[:4] == b"\x89PNG"

    # the script: a dry run without a key, and exit status 2 for a missing concept file
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    script = annotate_script()
    runner = CliRunner()
    r = runner.invoke(script.main, ["categorise", "--dry-run", "--out", str(tmp_path / "dry"),
                                    *sum((["--concepts", f] for f in files), [])])
    assert r.exit_code == 0, r.output
    est = json.loads((tmp_path / "dry" / "dry_run" / "estimate_categorise.json").read_text())
    assert est["requests"] == 1 + 1 + 1  # 6 concepts in one batch of 40: describe, categories, assign
    r = runner.invoke(script.main, ["categorise", "--out", str(tmp_path / "x"),
                                    "--concepts", str(tmp_path / "missing.txt")])
    assert r.exit_code == 2 and "concept list not found" in r.output
    r = runner.invoke(script.main, ["categorise", "--out", str(tmp_path / "x"),
                                    "--concepts", files[0]])
    assert r.exit_code == 2 and "ANTHROPIC_API_KEY is not set" in r.output


def annotate_script():
    return load_script(REPO / "scripts" / "annotate.py")


def test_features_cli_dry_run_with_a_config(setup, tmp_path, monkeypatch):
    store, params, _, tsv = setup
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    save_sae(tmp_path / "sae", SavedSAE("relu", params))  # read by sae_dir.load_sae
    (tmp_path / "c.yaml").write_text("annotate:\n  selection:\n    feature_fraction: 0.25\n"
                                     "    seed: 3\n  llm:\n    model: claude-haiku-4-5\n")
    args = ["features", "--store", store.url, "--layer", str(LAYER), "--sae", str(tmp_path / "sae"),
        "--metadata", str(tsv), "--out", str(tmp_path / "run"), "--config", str(tmp_path / "c.yaml"),
        "--dry-run"]
    r = CliRunner().invoke(annotate_script().main, args)
    assert r.exit_code == 0, r.output
    est = json.loads((tmp_path / "run" / "dry_run" / "estimate_features.json").read_text())
    assert est["model"] == "claude-haiku-4-5" and est["to_request"] == est["requests"] > 0
    prompt = next((tmp_path / "run" / "dry_run" / "prompts").glob("describe-*.txt")).read_text()
    assert "| Protein | Name |" in prompt and "<summary>" in prompt
    r = CliRunner().invoke(annotate_script().main, args[:-1] + ["--features", "3,x"])
    assert r.exit_code == 2 and "--features" in r.output
    (tmp_path / "bad.yaml").write_text("annotate:\n  selection:\n    per_bim: 3\n")
    r = CliRunner().invoke(annotate_script().main, args[:-3] + ["--config", str(tmp_path / "bad.yaml")])
    assert r.exit_code == 2 and "per_bim" in r.output


def test_shipped_configs_have_a_valid_annotate_section():
    from interplm_jax.config import load_yaml

    for name in ("esm2_8m", "esm2_650m", "demo"):
        cfg = load_yaml(AnnotateConfig, REPO / "configs" / f"{name}.yaml", section="annotate")
        assert cfg.selection.top_two_target == 24 and cfg.llm.model


def test_store_and_metadata_must_agree(tmp_path, setup):
    from interplm_jax.errors import InputError

    _, params, _, _ = setup
    store = write_store(tmp_path / "s", ["P11111", "Q22222"],
                        {LAYER: [np.ones((5, D), np.float32), np.ones((4, D), np.float32)]})
    tsv = tmp_path / "m.tsv"
    tsv.write_text("Entry\tProtein names\tLength\tSequence\nP11111\tA\t3\tMKV\n")
    with pytest.raises(InputError, match="protein P11111: 3 residues in .* but 5 tokens"):
        run_features(tmp_path / "o", AnnotateConfig(), tsv, store, LAYER, params, dry_run=True)
    tsv.write_text("Entry\tProtein names\tLength\tSequence\nO33333\tA\t3\tMKV\n")
    with pytest.raises(InputError, match="none of the store's 2 proteins"):
        run_features(tmp_path / "o", AnnotateConfig(), tsv, store, LAYER, params, dry_run=True)


def test_protein_max_activations_match_numpy(setup):
    from interplm_jax.annotate.activations import protein_max_activations

    store, params, acts, _ = setup
    feats = np.array([0, 5, 17, 47])
    ref = np.stack([np.maximum((a - params["b_pre"]) @ params["W_enc"][:, feats]
                               + params["b_enc"][feats], 0).max(0) * params["scale"][feats]
                    for a in acts])
    enc = sae_encoder(params, feats)
    for batch_rows in (700, 5000):  # proteins longer than a batch, and many per batch
        got = protein_max_activations(store, LAYER, enc, batch_rows)
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    # a plain callable encoder takes the host path
    got = protein_max_activations(store, LAYER, lambda x: enc(x), 3000)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_restricted_encoder_equals_the_analysis_feature_function(setup):
    from interplm_jax.sae.features import feature_function

    _, params, acts, _ = setup
    feats = np.array([2, 9, 30])
    x = acts[0][:300]
    np.testing.assert_allclose(sae_encoder(params, feats)(x), feature_function("relu", params)(x)[:, feats],
                               rtol=1e-5, atol=1e-6)
