"""gs:// for real: the activation store, a sweep (with kill + resume) and SAE directories on a
local Google Cloud Storage emulator (``gcp-storage-emulator`` in a separate process speaking the
GCS JSON API, with the list offsets TensorStore needs: tests/gcs_emulator.py), reached by the real clients: TensorStore's ``gcs`` kvstore
(``TENSORSTORE_GCS_HTTP_URL`` + ``GOOGLE_AUTH_TOKEN_FOR_TESTING``) and etils.epath / gcsfs
(``STORAGE_EMULATOR_HOST``) under orbax. Everything is compared with the same run on local disk.
Skipped when the emulator or gcsfs is not installed.
"""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from train_streams import ArrayStream, factory, toy_activations

pytest.importorskip("gcp_storage_emulator")
pytest.importorskip("gcsfs")

from interplm_jax.errors import InputError  # noqa: E402
from interplm_jax.paths import as_path, is_url, read_json, write_atomic  # noqa: E402
from interplm_jax.sae_dir import load_sae, save_sae  # noqa: E402
from interplm_jax.store import ActivationStore, write_store  # noqa: E402
from interplm_jax.sweep_saes import checkpoint_steps, read_sweep  # noqa: E402
from interplm_jax.train import TrainConfig, train_sweep  # noqa: E402

HERE = Path(__file__).resolve().parent
BUCKET = "interplm-test"
D, B, STEPS = 16, 32, 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    """A GCS emulator on a free localhost port with one bucket; yields ``gs://<bucket>``."""
    port = _free_port()
    log = open(tmp_path_factory.mktemp("gcs") / "emulator.log", "w")
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "gcs_emulator.py"), "start", "--host", "127.0.0.1",
         "--port", str(port), "--in-memory", "--default-bucket", BUCKET],
        stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(url + "/", timeout=1).read()
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"GCS emulator exited with {proc.returncode}")
            time.sleep(0.05)
    env = {"STORAGE_EMULATOR_HOST": url, "TENSORSTORE_GCS_HTTP_URL": url,
           "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator-token"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    # gcsfs asks the (unreachable) storage-control API for the bucket type and logs a warning
    logging.getLogger("gcsfs").setLevel(logging.ERROR)
    try:
        yield f"gs://{BUCKET}"
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        proc.terminate()
        proc.wait(10)
        log.close()


def test_small_files(gcs):
    path = as_path(f"{gcs}/small/a.json")
    assert is_url(f"{gcs}/x") and not is_url("/tmp/x") and os.fspath(path) == f"{gcs}/small/a.json"
    write_atomic(path, json.dumps({"a": 1}))
    assert read_json(path, "missing") == {"a": 1}
    with pytest.raises(InputError, match="nothing here"):
        read_json(f"{gcs}/small/none.json", "nothing here")
    write_atomic(path, "{not json")
    with pytest.raises(InputError, match="a.json: not valid JSON"):
        read_json(path, "missing")


def _proteins(n=7, d=8, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 40, size=n)
    ids = [f"P{i:05d}" for i in range(n)]
    return ids, {L: [rng.normal(size=(int(n_), d)).astype(np.float32) for n_ in lengths]
                 for L in (1, 3)}


def test_store_round_trip(gcs, tmp_path):
    ids, acts = _proteins()
    local = write_store(tmp_path / "store", ids, acts, shard_size=3)
    remote = write_store(f"{gcs}/stores/a", ids, acts, shard_size=3)
    again = ActivationStore.open(f"{gcs}/stores/a")
    assert remote.manifest["complete"] and again.manifest == remote.manifest
    assert again.protein_ids == ids and np.array_equal(again.offsets, local.offsets)
    for L in (1, 3):
        np.testing.assert_array_equal(again.rows(L, 0, again.n_tokens), local.rows(L, 0, local.n_tokens))
        for p, a in enumerate(acts[L]):
            np.testing.assert_array_equal(again.protein(ids[p], L), a)
    # objects live where the layout says, and the shard markers as written locally
    keys = sorted(str(p.name) for p in as_path(f"{gcs}/stores/a/shards").iterdir())
    assert keys == sorted(p.name for p in (tmp_path / "store" / "shards").iterdir())


def _config(**kw) -> TrainConfig:
    base = dict(steps=STEPS, batch_size=B, d_sae=24, grid={"lr": [1e-3, 1e-2]}, log_every=2,
                checkpoint_every=4, seed=0)
    return TrainConfig(**{**base, **kw})


class Interrupt(Exception):
    pass


def _dying(data, die_at):
    def make(host_index, host_count, position):
        stream = ArrayStream(data, B, 0, host_index, host_count, position)

        class S:
            def __iter__(self):
                for i, batch in enumerate(stream):
                    if i == die_at:
                        raise Interrupt
                    yield batch

            @property
            def position(self):
                return stream.position

        return S()

    return make


@pytest.fixture(scope="module")
def sweeps(gcs, tmp_path_factory):
    """(local run, remote run killed after its first checkpoint then resumed, remote URL)."""
    data = toy_activations(n=B * 5, d=D, seed=4)
    local = train_sweep(_config(), factory(data, B), D, tmp_path_factory.mktemp("sw") / "run", layer=2)
    url = f"{gcs}/sweeps/run"
    with pytest.raises(Interrupt):
        train_sweep(_config(), _dying(data, 5), D, url, layer=2)
    assert checkpoint_steps(url) == [4]
    with pytest.raises(InputError, match="pass --resume"):
        train_sweep(_config(), factory(data, B), D, url, layer=2)
    remote = train_sweep(_config(), factory(data, B), D, url, layer=2, resume=True)
    return local, remote, url


def test_sweep_on_gcs_resumes_bit_identical(sweeps):
    local, remote, url = sweeps
    assert os.fspath(remote.out) == url and remote.step == STEPS
    for k, v in local.params.items():
        np.testing.assert_array_equal(remote.params[k], v, err_msg=k)
    lines = lambda p: [json.loads(x) for x in (p / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert lines(remote.out) == lines(local.out)  # killed at step 6: lines of step 6 dropped
    assert (remote.out / "grid.json").read_text() == (local.out / "grid.json").read_text()
    assert checkpoint_steps(url) == checkpoint_steps(local.out) == [4, 8]


def test_read_sweep_and_sae_dirs_on_gcs(sweeps):
    local, remote, url = sweeps
    got, want = read_sweep(url), read_sweep(local.out)
    assert list(got) == list(want) == ["sae000", "sae001"]
    for sae_id in got:
        for k, v in want[sae_id].params.items():
            np.testing.assert_array_equal(got[sae_id].params[k], v, err_msg=k)
    assert got["sae001"].meta["sweep"] == url
    save_sae(f"{url}/saes/sae001", got["sae001"])
    back = load_sae(f"{url}/saes/sae001")
    assert back.arch == "relu" and back.meta["sweep"] == url
    for k, v in got["sae001"].params.items():
        np.testing.assert_array_equal(back.params[k], v, err_msg=k)
    with pytest.raises(InputError, match="not an SAE directory"):
        load_sae(f"{url}/saes/none")


def test_train_and_plot_scripts_on_gcs(gcs, tmp_path):
    """scripts/train.py with --store and --out on gs://, then plot_training from gs://."""
    from test_train_script import script

    ids, acts = _proteins(n=12, d=D, seed=3)
    write_store(f"{gcs}/stores/b", ids, acts, shard_size=5)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  steps: 6\n  batch_size: 32\n  expansion: 2\n  layers: [3]\n"
                   "  grid: {lr: [1.0e-3, 1.0e-2]}\n  log_every: 3\n  checkpoint_every: 3\n")
    runner = CliRunner()
    args = ["--config", str(cfg), "--store", f"{gcs}/stores/b", "--out", f"{gcs}/runs"]
    res = runner.invoke(script("train"), args)
    assert res.exit_code == 0, res.output
    assert f"layer 3: 2 SAEs, step 6 -> {gcs}/runs/layer_3" in res.output
    res = runner.invoke(script("train"), args)
    assert res.exit_code == 2 and "--resume" in res.output
    res = runner.invoke(script("plot_training"), ["--sweep", f"{gcs}/runs/layer_3"])
    assert res.exit_code == 0, res.output
    sweep = as_path(f"{gcs}/runs/layer_3")
    assert [json.loads(x)["step"] for x in (sweep / "metrics.jsonl").read_text().splitlines()] \
        == [3, 3, 6, 6]
    assert (sweep / "training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = yaml.safe_load((sweep / "config.yaml").read_text())
    assert config["store"] == f"{gcs}/stores/b" and checkpoint_steps(sweep) == [3, 6]

    # normalize the sweep in place on gs://: scale = 1 / max over the store, as computed locally
    from interplm_jax import normalize as nz

    raw = read_sweep(sweep)
    res = runner.invoke(script("normalize"), ["--sweep", os.fspath(sweep), "--store", f"{gcs}/stores/b"])
    assert res.exit_code == 0, res.output
    normalized = read_sweep(sweep)
    store = ActivationStore.open(f"{gcs}/stores/b")
    for sae_id, sae in raw.items():
        want, stats = nz.normalize(sae, store, 3)
        np.testing.assert_allclose(normalized[sae_id].params["scale"], want.params["scale"], rtol=1e-6)
        assert normalized[sae_id].meta["normalized_on"]["store"].rstrip("/") == f"{gcs}/stores/b"
        maxima = np.load(io.BytesIO((sweep / "saes" / sae_id / "feature_stats" / "max.npy").read_bytes()))
        np.testing.assert_allclose(maxima, stats.max, rtol=1e-6)
