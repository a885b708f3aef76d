"""scripts/train.py and scripts/plot_training.py on a real (small) activation store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from train_streams import toy_activations

from interplm_jax.cli import load_script
from interplm_jax.store import write_store

REPO = Path(__file__).resolve().parents[1]


def script(name: str):
    return load_script(REPO / "scripts" / f"{name}.py").main


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    data = toy_activations(n=3000, d=16, seed=5)
    rng = np.random.default_rng(0)
    cuts = np.sort(rng.choice(np.arange(1, 3000), size=39, replace=False))
    proteins = np.split(data, cuts)
    ids = [f"P{i:05d}" for i in range(len(proteins))]
    return write_store(tmp_path_factory.mktemp("store") / "store", ids,
                       {2: proteins, 5: [p * 2 for p in proteins]}, shard_size=10)


def test_train_script_trains_each_layer_and_resumes(store, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  steps: 30\n  batch_size: 64\n  expansion: 2\n  layers: [2, 5]\n"
                   "  grid: {lr: [1.0e-3, 1.0e-2]}\n  log_every: 10\n  checkpoint_every: 10\n")
    out = tmp_path / "runs"
    runner = CliRunner()
    res = runner.invoke(script("train"), ["--config", str(cfg), "--store", store.url, "--out", str(out)])
    assert res.exit_code == 0, res.output
    for layer in (2, 5):
        lines = (out / f"layer_{layer}" / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(x)["step"] for x in lines] == [10, 10, 20, 20, 30, 30]
    assert "layer 5: 2 SAEs, step 30" in res.output
    # rerun without --resume: refused (exit 2), with it: nothing left to do
    res = runner.invoke(script("train"), ["--config", str(cfg), "--store", store.url, "--out", str(out)])
    assert res.exit_code == 2 and "--resume" in res.output
    res = runner.invoke(script("train"), ["--config", str(cfg), "--store", store.url, "--out",
                                          str(out), "--resume", "--layers", "2"])
    assert res.exit_code == 0 and "layer 2: 2 SAEs, step 30" in res.output
    res = runner.invoke(script("plot_training"), ["--sweep", str(out / "layer_2")])
    assert res.exit_code == 0 and (out / "layer_2" / "training.png").stat().st_size > 10_000


def test_train_script_rejects_bad_config(store, tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("train:\n  steps: 30\n  grid: {lr: [1.0e-3], k: [4]}\n")
    res = CliRunner().invoke(script("train"), ["--config", str(cfg), "--store", store.url,
                                               "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert "unknown hyperparameter(s) ['k'] for arch 'relu'" in res.output
    cfg.write_text("train:\n  steps: 30\n  layers: [3]\n")
    res = CliRunner().invoke(script("train"), ["--config", str(cfg), "--store", store.url,
                                               "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "layer(s) [3] not in the store" in res.output


@pytest.mark.parametrize("body, message", [
    ("grad_clip: -1", "grad_clip=-1.0: must be > 0"),
    ("grad_clip: 0", "grad_clip=0.0: must be > 0"),
    ("hparams: {l1: -0.1}", "hparams: l1=-0.1 must be >= 0"),
    ("grid: {l1: [0.1, -1]}", "grid.l1[1]: l1=-1 must be >= 0"),
    ("grid: {lr: [.nan]}", "grid.lr[0]: lr=nan is not finite"),
    ("dead_tokens: -5", "dead_tokens=-5: must be > 0"),
    ("resample_steps: 0", "resample_steps=0: must be > 0"),
    ("seed: -1", "seed=-1: must be >= 0"),
    ("hparams: {seed: -3}", "hparams: seed=-3 must be >= 0"),
    ("warmup_steps: -1", "warmup_steps must be >= 0"),
    ("warmup_steps: 5\n  decay_start: 3", "decay_start (3) must be > warmup_steps"),
    ("sparsity_warmup_steps: -2", "sparsity warmup steps must be >= 0"),
    ("steps: 0", "steps=0: must be > 0"),
    ("steps: 1.0e+12", "steps=1000000000000: must be <= 2147483647"),
    ("arch: topk\n  hparams: {k: 0}", "hparams: k=0 must be in [1, F]"),
    ("arch: topk\n  grid: {k: [4, 33]}", "grid.k[1]: k=33 must be in [1, F] (F = 32)"),
    ("arch: batchtopk\n  hparams: {threshold_beta: 1.5}", "threshold_beta=1.5 must be in [0, 1]"),
    ("arch: jumprelu\n  grid: {bandwidth: [0.001, 0]}", "grid.bandwidth[1]: bandwidth=0 must be > 0"),
    ("arch: jumprelu\n  hparams: {target_l0: -1}", "target_l0=-1 must be > 0"),
])
def test_every_bad_train_option_exits_2_naming_file_and_key(store, tmp_path, body, message):
    """Issue 13 item 4: refused before anything is written, with the config file and the key."""
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(f"train:\n  steps: 30\n  batch_size: 64\n  expansion: 2\n  {body}\n")
    out = tmp_path / "o"
    res = CliRunner().invoke(script("train"), ["--config", str(cfg), "--store", store.url,
                                               "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert f"{cfg}:train" in res.output and message in res.output, res.output
    assert "Traceback" not in res.output and not out.exists()


def _corrupt_newest(sweep: Path) -> int:
    """Truncate the array data of the sweep's newest checkpoint (a torn copy, a bad disk)."""
    ck = sweep / "checkpoints"
    newest = max(int(p.name) for p in ck.iterdir() if p.name.isdigit())
    data = [p for p in (ck / str(newest) / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    assert data
    for p in data:
        with open(p, "r+b") as f:
            f.truncate(10)
    return newest


def test_a_corrupted_newest_checkpoint_falls_back_to_the_one_before(store, tmp_path):
    """train --resume, normalize --sweep and export read the newest checkpoint that reads back,
    say so, and end like an uninterrupted run."""
    import shutil
    import subprocess
    import sys

    from interplm_jax.sweep_saes import read_sweep

    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  steps: 30\n  batch_size: 64\n  expansion: 2\n  layers: [2]\n"
                   "  grid: {lr: [1.0e-3, 1.0e-2]}\n  log_every: 10\n  checkpoint_every: 10\n")
    whole = tmp_path / "whole"
    res = CliRunner().invoke(script("train"), ["--config", str(cfg), "--store", store.url, "--out", str(whole)])
    assert res.exit_code == 0, res.output
    broken = tmp_path / "broken"
    shutil.copytree(whole, broken)
    assert _corrupt_newest(broken / "layer_2") == 30

    # normalize and export: the SAEs of step 20, with a warning naming step 30
    def python(*args):
        return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True,
                              cwd=REPO, env={**__import__("os").environ, "INTERPLM_PROGRESS": "0"})

    norm = python(REPO / "scripts" / "normalize.py", "--sweep", broken / "layer_2", "--store", store.url)
    assert norm.returncode == 0 and "Traceback" not in norm.stderr, norm.stderr
    assert "step 30" in norm.stderr and "step 20" in norm.stderr
    assert len(norm.stderr.splitlines()) < 30  # no shutdown noise
    old = read_sweep(whole / "layer_2", step=20)
    got = read_sweep(broken / "layer_2")
    for sae_id, sae in old.items():
        assert got[sae_id].meta["step"] == 20
        np.testing.assert_array_equal(got[sae_id].params["W_enc"], sae.params["W_enc"])
    res = CliRunner().invoke(script("export"), ["--sweep", str(broken / "layer_2"), "--format",
                                                "native", "--out", str(tmp_path / "exported")])
    assert res.exit_code == 0, res.output

    # train --resume: from step 20 to the same end as the uninterrupted run
    train = python(REPO / "scripts" / "train.py", "--config", cfg, "--store", store.url,
                   "--out", broken, "--resume")
    assert train.returncode == 0 and "Traceback" not in train.stderr, train.stderr
    assert "step 30" in train.stderr and "step 20" in train.stderr
    a, b = read_sweep(whole / "layer_2"), read_sweep(broken / "layer_2")
    for sae_id in a:
        assert b[sae_id].meta["step"] == 30
        for k in a[sae_id].params:
            np.testing.assert_array_equal(b[sae_id].params[k], a[sae_id].params[k])
    assert ((broken / "layer_2" / "metrics.jsonl").read_text()
            == (whole / "layer_2" / "metrics.jsonl").read_text())
