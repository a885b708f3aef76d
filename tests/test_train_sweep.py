"""The sweep loop: directory layout, exact resume, refused checkpoints, devices and hosts."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import yaml
from train_streams import ArrayStream, factory, toy_activations

from interplm_jax.errors import InputError, LockedError
from interplm_jax.train import TrainConfig, train_sweep
from interplm_jax.train.checkpoint import CheckpointMismatch

D, B, STEPS = 16, 32, 12
HERE = Path(__file__).resolve().parent
# A sweep directory of the trainer as of commit f2638ee (one loop per layer and another for the
# layers together): ReLU x 2 (lr 1e-3, 1e-2), d_sae 32, layer 3, its stream dead at the 7th
# batch (during step 7), so checkpoint 4 and metrics up to step 6. config() with OLD_CONFIG.
OLD_SWEEP = HERE / "data" / "sweep_f2638ee"
OLD_CONFIG = dict(grid={"lr": [1e-3, 1e-2]}, d_sae=32, log_every=2, keep_checkpoints=1,
                  mesh_sae=1, mesh_data=1)
GRID = {"lr": [1e-3, 3e-3, 1e-2, 3e-2], "l1": [0.02, 0.1]}  # 8 SAEs


def config(**kw) -> TrainConfig:
    base = dict(steps=STEPS, batch_size=B, d_sae=48, grid=GRID, log_every=4,
                checkpoint_every=4, resample_steps=6)
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def data():
    return toy_activations(n=B * 10, d=D, seed=2)  # 10 batches per epoch: the run crosses one


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "full"
    return train_sweep(config(mesh_sae=1, mesh_data=1), factory(data, B), D, out, layer=3)


def test_sweep_directory_layout(uninterrupted):
    out = uninterrupted.out
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["warmup_steps"] == pytest.approx(0.6) and cfg["decay_start"] == 6
    assert cfg["sparsity_warmup_steps"] == 0 and cfg["layer"] == 3 and cfg["d_sae"] == 48
    grid = json.loads((out / "grid.json").read_text())
    assert [(r["lr"], r["l1"]) for r in grid][:3] == [(1e-3, 0.02), (1e-3, 0.1), (3e-3, 0.02)]
    assert {r["id"] for r in grid} == {f"sae{i:03d}" for i in range(8)}
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert sorted({m["step"] for m in lines}) == [4, 8, 12] and len(lines) == 24
    assert {"loss", "recon", "l1", "l0", "fve", "mse", "dead", "lr", "l1_coef"} <= set(lines[0])
    assert sorted(int(p.name) for p in (out / "checkpoints").iterdir() if p.name.isdigit()) == [4, 8, 12]
    assert uninterrupted.step == STEPS and uninterrupted.ok.all()
    assert uninterrupted.params["W_enc"].shape == (8, D, 48)


class Interrupt(Exception):
    pass


def dying(data, at: int = 7):
    """A stream factory whose stream dies while fetching batch ``at`` (0-based): with ``at=7``
    during step 8, after the checkpoint of step 4 (8 is not yet written)."""

    def make(host_index, host_count, position):
        stream = ArrayStream(data, B, 0, host_index, host_count, position)

        def batches():
            for i, batch in enumerate(stream):
                if i == at:
                    raise Interrupt
                yield batch

        class S:
            def __iter__(self):
                return batches()

            @property
            def position(self):
                return stream.position

        return S()

    return make


def test_resume_is_bit_identical(data, uninterrupted, tmp_path):
    cfg = config(mesh_sae=1, mesh_data=1)
    out = tmp_path / "resumed"
    with pytest.raises(Interrupt):
        train_sweep(cfg, dying(data), D, out, layer=3)
    with pytest.raises(InputError, match="pass --resume"):
        train_sweep(cfg, factory(data, B), D, out, layer=3)
    resumed = train_sweep(cfg, factory(data, B), D, out, layer=3, resume=True)
    for k, v in uninterrupted.params.items():
        np.testing.assert_array_equal(resumed.params[k], v, err_msg=k)
    full = (uninterrupted.out / "metrics.jsonl").read_text()
    assert (out / "metrics.jsonl").read_text() == full.replace(str(uninterrupted.out), str(out)) \
        or _same_metric_steps(out, uninterrupted.out)


def _same_metric_steps(a: Path, b: Path) -> bool:
    steps = lambda p: [json.loads(x)["step"] for x in (p / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    return steps(a) == steps(b)


def test_a_sweep_directory_of_an_older_trainer_resumes(data, tmp_path):
    cfg = config(**OLD_CONFIG)
    out = shutil.copytree(OLD_SWEEP, tmp_path / "old")
    positions = []

    def make(host_index, host_count, position):
        positions.append(position)
        return factory(data, B)(host_index, host_count, position)

    resumed = train_sweep(cfg, make, D, out, layer=3, resume=True)
    assert positions == [{"epoch": 0, "batch": 4, "seed": 0}]  # from the checkpoint of step 4
    fresh = train_sweep(cfg, factory(data, B), D, tmp_path / "fresh", layer=3)
    assert resumed.step == fresh.step == STEPS
    for k, v in fresh.params.items():
        np.testing.assert_array_equal(resumed.params[k], v, err_msg=k)
    assert (out / "metrics.jsonl").read_text() == (tmp_path / "fresh" / "metrics.jsonl").read_text()


def test_a_torn_last_metrics_line_is_dropped_on_resume(data, uninterrupted, tmp_path):
    """A kill or a full disk in the middle of a metrics line must not stop every later resume."""
    cfg = config(mesh_sae=1, mesh_data=1)
    out = tmp_path / "torn"
    with pytest.raises(Interrupt):
        train_sweep(cfg, dying(data), D, out, layer=3)
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 8, "tokens": 256, "sae": "sae0')  # torn
    train_sweep(cfg, factory(data, B), D, out, layer=3, resume=True)
    assert _same_metric_steps(out, uninterrupted.out)
    # A bad line that is not the last one is not a torn write: named, not dropped.
    lines = (out / "metrics.jsonl").read_text().splitlines()
    (out / "metrics.jsonl").write_text("\n".join([lines[0], "{oops", *lines[1:]]) + "\n")
    with pytest.raises(InputError, match=r"metrics.jsonl:2: not a metrics line"):
        train_sweep(cfg, factory(data, B), D, out, layer=3, resume=True)


HOLD_LOCK = """import sys, time
from interplm_jax.lock import locked
with locked(sys.argv[1], ".lock", "training"):
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_second_run_on_one_sweep_directory_is_refused_naming_the_first(data, tmp_path):
    """Two `train --resume` on one directory would both write metrics.jsonl and checkpoints."""
    cfg, out = config(mesh_sae=1, mesh_data=1), tmp_path / "sweep"
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], env=env,
                              stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"held\n"
        with pytest.raises(LockedError, match=rf"sweep: training is already running here "
                                              rf"\(process {holder.pid} on .*lock file .*sweep/.lock"):
            train_sweep(cfg, factory(data, B), D, out, layer=3, resume=True)
    finally:
        holder.kill()  # a lock dies with its holder, even by SIGKILL
        holder.wait()
    assert train_sweep(cfg, factory(data, B), D, out, layer=3, resume=True).step == STEPS


def test_checkpoint_of_another_grid_is_refused(data, uninterrupted):
    other = config(mesh_sae=1, mesh_data=1, grid={"lr": [1e-3, 3e-3, 1e-2, 3e-2], "l1": [0.02, 0.2]})
    with pytest.raises(CheckpointMismatch, match="grid: checkpoint has"):
        train_sweep(other, factory(data, B), D, uninterrupted.out, layer=3, resume=True)
    with pytest.raises(CheckpointMismatch, match="d_model"):
        train_sweep(config(mesh_sae=1, mesh_data=1), factory(data[:, :8], B), 8,
                    uninterrupted.out, layer=3, resume=True)


@pytest.mark.parametrize("mesh", [(4, 2), (8, 1)])
def test_sharded_equals_single_device(data, uninterrupted, tmp_path, mesh):
    assert jax.device_count() == 8
    result = train_sweep(config(mesh_sae=mesh[0], mesh_data=mesh[1]), factory(data, B), D,
                         tmp_path / "sharded", layer=3)
    for k, v in uninterrupted.params.items():
        np.testing.assert_allclose(result.params[k], v, rtol=2e-5, atol=2e-6, err_msg=k)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_equal_one(data, uninterrupted, tmp_path):
    """Two processes joined by jax.distributed (4 CPU devices each), each feeding its own half
    of every batch, train the same parameters as one process."""
    np.save(tmp_path / "data.npy", data)
    port = _free_port()
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "JAX_PLATFORMS": "cpu", "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(HERE)])}
    procs = [
        subprocess.Popen([sys.executable, str(HERE / "multihost_worker.py"), str(i), str(port),
                          str(tmp_path)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for i in range(2)
    ]
    outs = [p.communicate(timeout=240)[0].decode() for p in procs]
    for p, text in zip(procs, outs):
        assert p.returncode == 0, text[-3000:]
    hosts = json.loads((tmp_path / "hosts.json").read_text())
    assert hosts == [[0, 2], [1, 2]]  # each process read its own half of each batch
    got = np.load(tmp_path / "params.npz")
    for k, v in uninterrupted.params.items():
        np.testing.assert_allclose(got[k], v, rtol=2e-5, atol=2e-6, err_msg=k)


@pytest.mark.parametrize("on_nan", ["mask", "stop"])
def test_non_finite_batches_stop_the_run(data, tmp_path, on_nan):
    from interplm_jax.train import TrainingError

    bad = data.copy()
    bad[:, 0] = np.nan  # every SAE sees it
    match = "every SAE" if on_nan == "mask" else r"SAE sae000 \(lr=0.001, .*step 0; stopping"
    with pytest.raises(TrainingError, match=match):
        train_sweep(config(mesh_sae=1, mesh_data=1, on_nan=on_nan), factory(bad, B), D,
                    tmp_path / on_nan, layer=3)
