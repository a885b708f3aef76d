"""What a training run writes into its sweep directory besides checkpoints: config.yaml,
grid.json, the input transform and metrics.jsonl (see :mod:`interplm_jax.train.sweep`).

On an object store (``gs://``) metrics.jsonl is rewritten at each checkpoint, at the end and at
most every ``METRICS_FLUSH_S`` seconds; local files are appended to at every log.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import numpy as np
import yaml

from interplm_jax.input_transform import InputTransform, record_transform
from interplm_jax.layout import SweepFiles
from interplm_jax.paths import AnyPath, append_text, write_atomic
from interplm_jax.sweep_saes import metric_rows
from interplm_jax.train.config import TrainConfig, resolved

METRICS_FLUSH_S = 300.0


def prepare_directory(files: SweepFiles, cfg: TrainConfig, grid: list[dict], d_model: int,
                      layer: int | None, extra_config: dict | None,
                      transform: InputTransform | None, resumed_at: int | None) -> None:
    """On process 0: a new sweep's config.yaml, grid.json, empty metrics.jsonl and input
    transform; or, resumed from the checkpoint at step ``resumed_at``, the transform checked
    and metrics.jsonl cut back to that step."""
    if resumed_at is not None:
        if jax.process_index() == 0:
            record_transform(files.root, transform, resuming=True)
        _truncate_metrics(files.metrics, resumed_at)
    elif jax.process_index() == 0:
        config = {**resolved(cfg), **(extra_config or {}), "layer": layer, "d_model": d_model,
                  "d_sae": cfg.dict_size(d_model)}
        write_atomic(files.config, yaml.safe_dump(config, sort_keys=False))
        write_atomic(files.grid, json.dumps(grid, indent=1) + "\n")
        write_atomic(files.metrics, "")
        record_transform(files.root, transform, resuming=False)


def metric_lines(step: int, grid: list[dict], metrics: dict[str, np.ndarray], tokens: int) -> str:
    """metrics.jsonl's lines of one logged step: one per SAE; metrics: name -> (G,)."""
    lines = []
    for i, row in enumerate(grid):
        entry = {"step": step, "tokens": tokens, "sae": row["id"]}
        entry.update({k: float(v[i]) for k, v in metrics.items()})
        lines.append(json.dumps(entry))
    return "\n".join(lines) + "\n"


class MetricsFile:
    """metrics.jsonl of process 0: appended at every log locally; on an object store (where an
    append rewrites the object) batched until :meth:`flush` or ``METRICS_FLUSH_S`` seconds."""

    def __init__(self, path: AnyPath):
        self.path, self.pending, self.last = path, [], time.monotonic()
        self.local = isinstance(path, Path)

    def add(self, text: str) -> None:
        self.pending.append(text)
        if self.local or time.monotonic() - self.last > METRICS_FLUSH_S:
            self.flush()

    def flush(self) -> None:
        if self.pending and jax.process_index() == 0:
            append_text(self.path, "".join(self.pending))
        self.pending, self.last = [], time.monotonic()


def _truncate_metrics(path: AnyPath, step: int) -> None:
    """Drop metric lines after ``step`` (written after the checkpoint we resume from), and a
    torn last line."""
    if jax.process_index() != 0 or not path.exists():
        return
    keep = [row for row in metric_rows(path) if row["step"] <= step]
    write_atomic(path, "".join(json.dumps(row) + "\n" for row in keep))
