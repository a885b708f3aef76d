"""The demo study at test sizes, run by scripts/pipeline.py in a subprocess that is killed
(SIGKILL) once during training and then resumed: the fixture the pipeline and browser tests share."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PIPELINE = REPO / "scripts" / "pipeline.py"


def small_config(dest: Path) -> Path:
    """configs/demo.yaml at test sizes (2 layers, 2 SAEs per layer, 200 steps, every baseline),
    paths absolute."""
    cfg = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    demo = REPO / "data" / "demo"
    cfg["study"].update(train_fasta=str(demo / "swissprot_sample.fasta.gz"),
                        annotations=str(demo / "uniprotkb_features.tsv.gz"),
                        structures=str(demo / "alphafold"),
                        structures_fasta=str(demo / "alphafold" / "sequences.fasta"),
                        analysis_layers=[4], annotate="dry-run",
                        baselines=["shuffled", "random_init", "neurons"], random_init_seed=5)
    cfg["extract"]["layers"] = [2, 4]
    cfg["train"].update(layers=[2, 4], steps=200, grid={"lr": [3.0e-3], "l1": [0.02, 0.06]},
                        log_every=20, checkpoint_every=40)
    cfg["causal"].update(layers=[4], max_concepts=2, max_proteins=2)
    dest.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return dest


def pipeline(config: Path, out: Path, *args: str, check: bool = True,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run scripts/pipeline.py to completion (``env``: extra environment variables)."""
    proc = subprocess.run(_command(config, out, *args), capture_output=True, text=True,
                          env={**_env(), **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"pipeline exit {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def _command(config: Path, out: Path, *args: str) -> list[str]:
    return [sys.executable, str(PIPELINE), "--config", str(config), "--out", str(out), *args]


def _env() -> dict[str, str]:
    env = dict(os.environ, INTERPLM_PROGRESS="0", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.pop("XLA_FLAGS", None)  # one CPU device, as a user's laptop
    env.pop("ANTHROPIC_API_KEY", None)
    return env


def run_interrupted(config: Path, out: Path, timeout: float = 600) -> tuple[str, bool]:
    """Start the pipeline, SIGKILL it once the first training checkpoint is on disk; return its
    log and whether it was still running when killed."""
    log = out.parent / f"{out.name}-killed.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(_command(config, out), stdout=f, stderr=subprocess.STDOUT, env=_env())
        first = out / "model" / "sweeps" / "layer_2" / "checkpoints"
        t0 = time.monotonic()
        while proc.poll() is None and time.monotonic() - t0 < timeout:
            if first.is_dir() and any(p.name.isdigit() for p in first.iterdir()):
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.05)
        killed = proc.wait() == -signal.SIGKILL
    return log.read_text(), killed


@dataclass(frozen=True)
class DemoStudy:
    config: Path
    out: Path
    killed_log: str
    killed: bool
    resumed_log: str


def build_demo_study(root: Path) -> DemoStudy:
    config = small_config(root / "study.yaml")
    out = root / "study"
    killed_log, killed = run_interrupted(config, out)
    resumed = pipeline(config, out)
    return DemoStudy(config, out, killed_log, killed, resumed.stdout + resumed.stderr)
