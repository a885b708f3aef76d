"""The scripts export.py, normalize.py, steer.py and fidelity.py end to end, and sweep reading."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from _saes import np_forward, random_sae
from interplm_jax.cli import load_script
from interplm_jax.errors import InputError
from interplm_jax.sae_dir import load_sae, save_sae
from interplm_jax.sweep_saes import read_sweep
from torch_bridge.export import read_interplm, write_interplm

REPO = Path(__file__).resolve().parents[1]


def _script(name):
    return load_script(REPO / "scripts" / f"{name}.py").main


def _run(name, args):
    return CliRunner().invoke(_script(name), [str(a) for a in args], catch_exceptions=False)


def _write_sweep(path: Path, saes, step=6):
    """A sweep directory in the layout of interplm_jax.train (grid.json + orbax Composite)."""
    import orbax.checkpoint as ocp

    grid = [{"id": f"sae{g:03d}", "arch": s.arch, "lr": 1e-3 * (g + 1), "seed": 0}
            for g, s in enumerate(saes)]
    path.mkdir(parents=True)
    (path / "grid.json").write_text(json.dumps(grid))
    state = {"params": {k: np.stack([s.params[k] for s in saes]) for k in saes[0].params},
             "step": np.array(step), "opt_state": {"mu": np.zeros(3)}}
    meta = {"arch": saes[0].arch, "grid": grid, "layer": 2}
    mgr = ocp.CheckpointManager((path / "checkpoints").absolute(),
                                options=ocp.CheckpointManagerOptions(create=True))
    mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                           meta=ocp.args.JsonSave(meta)))
    mgr.wait_until_finished()
    mgr.close()
    return grid


def test_read_sweep_and_export_cli(tmp_path):
    saes = [random_sae("topk", seed=s) for s in range(3)]
    grid = _write_sweep(tmp_path / "sweep", saes)
    got = read_sweep(tmp_path / "sweep", ids=["sae002"])
    np.testing.assert_array_equal(got["sae002"].params["W_enc"], saes[2].params["W_enc"])
    assert got["sae002"].meta["layer"] == 2 and got["sae002"].hparams["lr"] == grid[2]["lr"]
    with pytest.raises(InputError, match="no SAE \\['nope'\\]"):
        read_sweep(tmp_path / "sweep", ids=["nope"])

    r = _run("export", ["--sweep", tmp_path / "sweep", "--sae", "sae001", "--format", "interplm",
                        "--out", tmp_path / "out"])
    assert r.exit_code == 0, r.output
    back = read_interplm(tmp_path / "out" / "sae001" / "ae.pt")
    x = np.random.default_rng(0).normal(size=(16, 8))
    np.testing.assert_allclose(np_forward(back, x)[1], np_forward(saes[1], x)[1], atol=1e-5)
    r = _run("export", ["--sweep", tmp_path / "sweep", "--format", "saelens", "--out", tmp_path / "sl"])
    assert r.exit_code == 0 and sorted(p.name for p in (tmp_path / "sl").iterdir()) == [
        "sae000", "sae001", "sae002"]
    # import back to our format
    r = _run("export", ["--saelens", tmp_path / "sl" / "sae000", "--format", "native",
                        "--out", tmp_path / "native"])
    assert r.exit_code == 0
    np.testing.assert_allclose(np_forward(load_sae(tmp_path / "native"), x)[0],
                               np_forward(saes[0], x)[0], atol=1e-5)


def test_export_cli_bad_input_exits_2(tmp_path):
    torch.save(torch.nn.Linear(2, 2), tmp_path / "evil.pt")
    r = CliRunner().invoke(_script("export"), ["--interplm", str(tmp_path / "evil.pt"),
                                               "--format", "native", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "refused" in r.output
    r = CliRunner().invoke(_script("export"), ["--format", "native", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "exactly one" in r.output


def test_trained_sweep_exports(tmp_path):
    """A sweep written by the real trainer (interplm_jax.train) reads back and exports."""
    sweep_mod = pytest.importorskip("interplm_jax.train.sweep")
    from interplm_jax.config import from_dict
    from interplm_jax.train.config import TrainConfig

    class Stream:
        def __init__(self, data, position):
            self.data, self.i = data, (position or {}).get("i", 0)

        @property
        def position(self):
            return {"i": self.i}

        def __iter__(self):
            while True:
                self.i += 1
                yield self.data[(self.i * 16) % 480:(self.i * 16) % 480 + 16]

    data = np.random.default_rng(0).normal(size=(496, 8)).astype(np.float32)
    cfg = from_dict(TrainConfig, {"arch": "relu", "d_sae": 16, "steps": 4, "batch_size": 16,
                                  "grid": {"lr": [1e-3, 1e-2], "l1": [0.01]},
                                  "checkpoint_every": 2, "log_every": 2})
    res = sweep_mod.train_sweep(cfg, lambda hi, hc, pos: Stream(data, pos), 8, tmp_path / "sw", layer=3)
    saes = read_sweep(tmp_path / "sw")
    assert list(saes) == [r["id"] for r in res.grid]
    for g, sae in enumerate(saes.values()):
        np.testing.assert_array_equal(sae.params["W_dec"], np.asarray(res.params["W_dec"][g]))
        assert sae.meta["layer"] == 3
    # the InterPLM export records the real training, and its import keeps lr, l1 and layer
    import yaml

    sae = saes["sae001"]
    write_interplm(sae, tmp_path / "ae")
    written = yaml.safe_load((tmp_path / "ae" / "config.yaml").read_text())
    trainer, loader = written["trainer_cfg"], written["dataloader_cfg"]
    assert (loader["batch_size"], loader["plm_layer"], trainer["steps"]) == (16, 3, 4)
    assert (trainer["lr"], trainer["l1_penalty"]) == (1e-2, 0.01) == (sae.hparams["lr"], sae.hparams["l1"])
    swept = yaml.safe_load((tmp_path / "sw" / "config.yaml").read_text())
    assert (trainer["warmup_steps"], trainer["decay_start"], trainer["grad_clip_norm"]) == (
        swept["warmup_steps"], swept["decay_start"], swept["grad_clip"])
    back = read_interplm(tmp_path / "ae" / "ae.pt")
    assert back.hparams == {"lr": 1e-2, "l1": 0.01} and back.meta["layer"] == 3
    assert back.meta["train"]["batch_size"] == 16 and back.meta["train"]["steps"] == 4


@pytest.fixture(scope="module")
def small_store(tmp_path_factory, tiny_esm):
    from interplm_jax.store import write_store

    rng = np.random.default_rng(3)
    acts = [rng.normal(size=(n, 32)).astype(np.float32) for n in rng.integers(5, 30, size=12)]
    return write_store(tmp_path_factory.mktemp("st") / "s", [f"p{i}" for i in range(12)], {2: acts},
                       shard_size=5)


def test_normalize_cli_on_our_dir_and_interplm_dir(tmp_path, small_store):
    pytest.importorskip("interplm_jax.sae", reason="needs the JAX SAE architectures (issue 3)")
    sae = random_sae("relu", d=32, F=40, normalized=False)
    save_sae(tmp_path / "ours", sae)
    r = _run("normalize", ["--sae", tmp_path / "ours", "--store", small_store.url.replace("file://", "")])
    assert r.exit_code == 0, r.output
    ours = load_sae(tmp_path / "ours")
    maxima = np.load(tmp_path / "ours" / "feature_stats" / "max.npy")
    np.testing.assert_allclose(ours.params["scale"][maxima > 0], 1 / maxima[maxima > 0], rtol=1e-6)

    write_interplm(sae, tmp_path / "ref")
    store_arg = small_store.url.replace("file://", "")
    r = _run("normalize", ["--sae", tmp_path / "ref", "--store", store_arg, "--layer", 2])
    assert r.exit_code == 0, r.output
    sd = torch.load(tmp_path / "ref" / "ae_normalized.pt", weights_only=True)
    np.testing.assert_allclose(sd["activation_rescale_factor"].numpy(), maxima, rtol=1e-6)
    r = _run("normalize", ["--sae", tmp_path / "neurons", "--store", store_arg, "--layer", 2, "--neurons"])
    assert r.exit_code == 0 and load_sae(tmp_path / "neurons").meta["baseline"] == "neuron"


def test_steer_and_fidelity_cli(tmp_path, tiny_esm):
    sae = random_sae("relu", d=32, F=64, seed=5)
    save_sae(tmp_path / "sae", sae)
    live = int(np.flatnonzero(sae.params["scale"] > 0)[0])
    r = _run("steer", ["--model", tiny_esm, "--sae", tmp_path / "sae", "--feature", live,
                       "--value", "0,1,4", "--sequence", "MKTAYIAKQRQISFVK", "--positions", "3-5",
                       "--aa", "AKL", "--out", tmp_path / "steer.tsv", "--plot", tmp_path / "p.png"])
    assert r.exit_code == 0, r.output
    rows = (tmp_path / "steer.tsv").read_text().splitlines()
    assert rows[0] == "value\tA\tK\tL" and [l.split("\t")[0] for l in rows[1:]] == ["unsteered", "0", "1", "4"]
    assert (tmp_path / "p.png").stat().st_size > 0
    fasta = tmp_path / "held_out.fasta"
    fasta.write_text(">a\nMKTAYIAKQRQISFVK\n>b\nGSHMASNKLLE\n>c\nMSLEQKKGADIISK\n")
    write_interplm(sae, tmp_path / "ref")
    r = _run("fidelity", ["--model", tiny_esm, "--fasta", fasta, "--sae", tmp_path / "sae",
                          "--sae", tmp_path / "ref" / "ae.pt", "--layer", 2, "--out", tmp_path / "f.tsv"])
    assert r.exit_code == 0, r.output
    lines = (tmp_path / "f.tsv").read_text().splitlines()
    assert lines[0].startswith("sae_id\tce_clean") and len(lines) == 3
    # the same SAE through both formats gives the same CE
    assert lines[1].split("\t")[1:5] == lines[2].split("\t")[1:5]
    # a protein over --max-length: the message names the option that skips it, and it works
    fasta.write_text(fasta.read_text() + ">long\n" + "A" * 30 + "\n")
    args = ["--model", tiny_esm, "--fasta", fasta, "--sae", tmp_path / "sae", "--max-length", 20]
    r = CliRunner().invoke(_script("fidelity"), [str(a) for a in args])
    assert r.exit_code == 2 and "'long': too long" in r.output and "--on-invalid skip" in r.output
    r = _run("fidelity", args + ["--on-invalid", "skip", "--out", tmp_path / "f3.tsv"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "f3.tsv").read_text().splitlines()[1].split("\t")[-1] == "3"


def test_read_sweep_takes_scale_of_sweep_normalized_saes(tmp_path):
    saes = [random_sae("relu", seed=s, normalized=False) for s in range(2)]
    _write_sweep(tmp_path / "sweep", saes, step=6)
    scale = np.linspace(0.5, 2.0, 24).astype(np.float32)
    for step, sae_id in ((6, "sae000"), (3, "sae001")):  # sae001's copy is from another step
        base = read_sweep(tmp_path / "sweep", [sae_id])[sae_id]
        save_sae(tmp_path / "sweep" / "saes" / sae_id, base.replace(
            params={**base.params, "scale": scale},
            meta={**base.meta, "step": step, "normalized_on": {"store": "s"}}))
    got = read_sweep(tmp_path / "sweep")
    np.testing.assert_array_equal(got["sae000"].params["scale"], scale)
    np.testing.assert_array_equal(got["sae001"].params["scale"], np.ones(24, np.float32))


@pytest.mark.parametrize("name", ["esm2_8m", "esm2_650m", "esmc_300m", "demo"])
def test_config_sections_load(name):
    from interplm_jax.config import load_yaml
    from interplm_jax.normalize import NormalizeConfig
    from torch_bridge.fidelity import FidelityConfig

    assert load_yaml(NormalizeConfig, REPO / "configs" / f"{name}.yaml", "normalize").chunk_tokens == 256
    assert load_yaml(FidelityConfig, REPO / "configs" / f"{name}.yaml", "fidelity").mask_fraction == 0.0
