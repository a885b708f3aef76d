"""Train one grid of SAEs on one layer: the sweep directory, the loop, metrics, checkpoints.

Sweep directory (DESIGN.md section 2)::

    config.yaml      the train config with defaults resolved
    grid.json        one row per SAE: id, arch, lr, seed and the architecture's hyperparameters
    metrics.jsonl    one line per (logged step, SAE)
    checkpoints/     orbax checkpoints of the whole train state (+ stream position, grid)
    .lock            while a run trains here (:mod:`interplm_jax.lock`)
    input_transform.json   centring/scaling of the inputs, when asked (:mod:`interplm_jax.input_transform`)
    preflight/       the preflight's dry run and report (``interplm_jax.train.run.preflight``)

``out`` may be a local directory or a ``gs://`` URL (see :mod:`interplm_jax.paths`): the small
files are written whole (atomically), checkpoints by orbax, and on an object store metrics.jsonl
is rewritten at each checkpoint, at the end and at most every ``METRICS_FLUSH_S`` seconds (local
files are appended to at every log).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import yaml
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P

from interplm_jax import sae
from interplm_jax.errors import InputError, InterPLMError
from interplm_jax.input_transform import InputTransform, record_transform
from interplm_jax.layout import SweepFiles
from interplm_jax.lock import locked
from interplm_jax.paths import AnyPath, append_text, as_path, write_atomic
from interplm_jax.progress import progress_bar
from interplm_jax.sweep_saes import metric_rows
from interplm_jax.train import sharding as sh
from interplm_jax.train.checkpoint import Checkpoints, abstract_like
from interplm_jax.train.config import INT_HPARAMS, TrainConfig, build_grid, grid_arrays, resolved
from interplm_jax.train.step import StepSpec, init_state, make_step

log = logging.getLogger(__name__)

METRICS_FLUSH_S = 300.0


class TrainingError(InterPLMError):
    """Training cannot go on (e.g. a non-finite loss with ``on_nan: stop``)."""


class Stream(Protocol):
    """What the trainer reads: batches (rows, d) float32 and the position of the next one."""

    position: dict

    def __iter__(self): ...


StreamFactory = Callable[[int, int, "dict | None"], Iterable]
"""(host_index, host_count, position or None) -> a Stream of this host's rows of each batch."""


@dataclass
class SweepResult:
    """What :func:`train_sweep` returns (parameters gathered to the host)."""

    out: AnyPath
    grid: list[dict[str, Any]]
    params: dict[str, np.ndarray]
    """(G, ...) each."""
    ok: np.ndarray
    """(G,) bool: False for SAEs frozen after a non-finite loss."""
    step: int
    preflight: list[str] = dataclasses.field(default_factory=list)
    """The preflight's warnings (``interplm_jax.train.run.preflight``)."""


def make_spec(cfg: TrainConfig, grid: list[dict]) -> StepSpec:
    """The static part of the compiled step."""
    warmup, decay, sparsity = cfg.schedule_steps()
    k_max = max((int(r["k"]) for r in grid if "k" in r), default=1)
    return StepSpec(
        arch=sae.get(cfg.arch), steps=cfg.steps, batch_size=cfg.batch_size,
        warmup_steps=warmup, decay_start=decay, sparsity_warmup_steps=sparsity,
        resample_steps=cfg.resample_steps, grad_clip=cfg.grad_clip,
        dead_tokens=cfg.dead_tokens, k_max=k_max, matmul_dtype=cfg.matmul_dtype,
        decoder=cfg.decoder, sparse_capacity=cfg.sparse_capacity)


def checkpoint_meta(cfg: TrainConfig, spec: StepSpec, grid: list[dict], d_model: int,
                    layer: int | None) -> dict:
    """The facts a sweep's checkpoints record (and a resumed run must share: ``MUST_MATCH``)."""
    return {
        "arch": cfg.arch, "d_model": d_model, "d_sae": cfg.dict_size(d_model), "grid": grid,
        "steps": cfg.steps, "batch_size": cfg.batch_size, "layer": layer,
        "schedule": [spec.warmup_steps, spec.decay_start, spec.sparsity_warmup_steps,
                     spec.resample_steps, spec.grad_clip, spec.dead_tokens, spec.matmul_dtype],
    }


def to_host(tree):
    """Fetch a pytree of (possibly multi-process) arrays to NumPy on every process."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    return multihost_utils.process_allgather(tree, tiled=True)


def sweep_lock(out: AnyPath):
    """The lock of a sweep directory, held by process 0 (a context manager; nothing on the
    other processes, nor on a ``gs://`` directory)."""
    return locked(out, ".lock", "training") if jax.process_index() == 0 else contextlib.nullcontext()


def train_sweep(
    cfg: TrainConfig,
    make_stream: StreamFactory,
    d_model: int,
    out: str | Path,
    layer: int | None = None,
    resume: bool = False,
    extra_config: dict | None = None,
    input_transform: InputTransform | None = None,
    lock: bool = True,
) -> SweepResult:
    """Train the grid of ``cfg`` on the stream's batches; write the sweep directory ``out``.

    Process 0 holds the lock of ``out`` (:func:`sweep_lock`) while it trains: a second run on
    the same directory stops with a :class:`LockedError` naming the first.

    Args:
      cfg: the train config.
      make_stream: builds this host's token stream (see :data:`StreamFactory`).
      d_model: width of the activations.
      out: the sweep directory (local path or ``gs://`` URL).
      layer: recorded in the metadata (a checkpoint of another layer is refused).
      resume: continue from the newest checkpoint in ``out`` (bit-identical on the CPU).
      extra_config: more entries for config.yaml (e.g. the store path).
      input_transform: applied to every batch (centring/scaling), recorded in the sweep
        directory and folded into the SAEs read back (:mod:`interplm_jax.input_transform`).
      lock: False when the caller holds :func:`sweep_lock` of ``out`` already.
    """
    out = as_path(out)
    # TopK's k is checked against F here, before anything (the lock included) is written
    grid = build_grid(cfg, F=cfg.dict_size(d_model))
    with sweep_lock(out) if lock else contextlib.nullcontext():
        return _train_sweep(cfg, grid, make_stream, d_model, out, layer, resume, extra_config,
                            input_transform)


def _train_sweep(cfg: TrainConfig, grid: list[dict], make_stream: StreamFactory, d_model: int,
                 out: AnyPath, layer: int | None, resume: bool,
                 extra_config: dict | None, transform: InputTransform | None) -> SweepResult:
    files = SweepFiles(out)
    F = cfg.dict_size(d_model)
    spec = make_spec(cfg, grid)
    arch = spec.arch
    G, B = len(grid), cfg.batch_size
    hp_host = grid_arrays(grid, ("lr", "seed") + arch.hparams)

    sae_n, data_n = sh.mesh_shape(jax.device_count(), G, B, cfg.mesh_sae, cfg.mesh_data)
    mesh = sh.make_mesh(sae_n, data_n)
    host_index, host_count = sh.host_slice(mesh, B, d_model)
    log.info("grid of %d %s SAEs %d -> %d, mesh sae=%d x data=%d, host %d of %d", G, cfg.arch,
             d_model, F, sae_n, data_n, host_index, host_count)

    meta = checkpoint_meta(cfg, spec, grid, d_model, layer)
    hp_names = tuple(sorted(hp_host))
    init_fn, step_fn, abstract, shardings, hp_sharding = _compiled(spec, mesh, d_model, F, G, hp_names)
    hp = jax.device_put(hp_host, hp_sharding)

    ckpts = Checkpoints(files.checkpoints, keep=cfg.keep_checkpoints)
    latest = ckpts.latest_step()
    position = None
    if latest is not None and not resume:
        raise InputError(f"{out}: holds checkpoints (newest at step {latest}); pass --resume to "
                         "continue, or choose another --out")
    if latest is not None:
        try:
            latest, state, found = ckpts.restore_newest(abstract_like(abstract, shardings), meta)
        except BaseException:
            ckpts.close()
            raise
        position = found["stream_position"]
        log.info("resuming %s at step %d", out, latest)
    else:
        if resume:
            log.info("%s: no checkpoint to resume from; starting at step 0", out)
        state = init_fn(hp)
    prepare_directory(files, cfg, grid, d_model, layer, extra_config, transform, latest)

    start = int(to_host(state.step))
    stream = make_stream(host_index, host_count, position)
    batches = iter(stream)
    warned: set[int] = set()
    metrics_file = _MetricsFile(files.metrics)
    bar = progress_bar(total=cfg.steps, desc=f"train {cfg.arch} x{G}", unit="step", initial=start)
    t_last, s_last = time.perf_counter(), start
    try:
        for step in range(start, cfg.steps):
            local = np.asarray(next(batches), np.float32)
            if transform is not None:
                local = transform(local)
            if local.shape != (B // host_count, d_model):
                raise InputError(f"stream gave a batch of shape {local.shape}; expected "
                                 f"{(B // host_count, d_model)} (batch_size / hosts, d_model)")
            position = stream.position
            state, metrics = step_fn(state, hp, sh.global_batch(mesh, local, B))
            done = step + 1
            bar.update(1)
            if done % cfg.log_every == 0 or done == cfg.steps:
                m, ok, bad = to_host((metrics, state.ok, state.bad_step))
                now = time.perf_counter()
                rate = (done - s_last) / max(now - t_last, 1e-9)
                t_last, s_last = now, done
                bar.set_postfix(tok_s=f"{rate * B:.3g}", refresh=False)
                metrics_file.add(_metric_lines(done, grid, m, done * B))
                _check_finite(cfg, grid, ok, bad, warned)
            if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                metrics_file.flush()
                ckpts.save(done, state, {**meta, "stream_position": position, "tokens": done * B})
        ckpts.wait()
    finally:
        metrics_file.flush()  # (lines after the last checkpoint are dropped again on resume)
        bar.close()
        ckpts.close()
    params, ok = to_host((state.params, state.ok))
    return SweepResult(out, grid, params, np.asarray(ok), int(to_host(state.step)))


def hparam_layout(mesh, G: int, hp_names: tuple[str, ...]) -> tuple[dict, dict]:
    """(abstract arrays, shardings) of a grid's hyperparameters: each a (G,) vector split over
    the mesh's ``sae`` axis."""
    abstract = {n: jax.ShapeDtypeStruct((G,), jnp.int32 if n in INT_HPARAMS else jnp.float32)
                for n in hp_names}
    return abstract, {n: NamedSharding(mesh, P("sae")) for n in hp_names}


@functools.lru_cache(maxsize=16)
def _compiled(spec: StepSpec, mesh, d_model: int, F: int, G: int, hp_names: tuple[str, ...]):
    """(init, step, abstract state, state shardings, hparam shardings) for a grid on a mesh.

    Cached, so that sweeps of the same shape (e.g. the layers of one config) compile once.
    """
    hp_abstract, hp_sharding = hparam_layout(mesh, G, hp_names)
    abstract = jax.eval_shape(lambda h: init_state(spec, d_model, F, h), hp_abstract)
    shardings = sh.state_shardings(mesh, abstract)
    init_fn = jax.jit(lambda h: init_state(spec, d_model, F, h), out_shardings=shardings)
    step_fn = jax.jit(
        make_step(spec),
        in_shardings=(shardings, hp_sharding, sh.batch_sharding(mesh)),
        out_shardings=(shardings, sh.replicated(mesh)),
        donate_argnums=(0,),
    )
    return init_fn, step_fn, abstract, shardings, hp_sharding


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


def _metric_lines(step: int, grid, metrics: dict[str, np.ndarray], tokens: int) -> str:
    lines = []
    for i, row in enumerate(grid):
        entry = {"step": step, "tokens": tokens, "sae": row["id"]}
        entry.update({k: float(v[i]) for k, v in metrics.items()})
        lines.append(json.dumps(entry))
    return "\n".join(lines) + "\n"


class _MetricsFile:
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


def _check_finite(cfg: TrainConfig, grid, ok: np.ndarray, bad: np.ndarray, warned: set[int],
                  where: str = "") -> None:
    """Report each SAE newly frozen by a non-finite loss (``where``: e.g. ``layer 5: ``)."""
    for i in np.flatnonzero(~ok):
        if i in warned:
            continue
        warned.add(int(i))
        msg = (f"{where}SAE {grid[i]['id']} ({_describe(grid[i])}): non-finite loss or gradient at step "
               f"{int(bad[i])}")
        if cfg.on_nan == "stop":
            raise TrainingError(msg + "; stopping (on_nan: stop)")
        log.error("%s; its parameters are frozen from that step on (on_nan: mask)", msg)
    if not ok.any():
        raise TrainingError(f"{where}every SAE of the grid hit a non-finite loss; stopping")


def _describe(row: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in row.items() if k not in ("id", "arch"))
