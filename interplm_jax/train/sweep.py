"""Train a grid of SAEs on one layer, or the grids of several layers with one loop: the sweep
directory of each layer, the loop, metrics, checkpoints.

Sweep directory (DESIGN.md section 2)::

    config.yaml      the train config with defaults resolved
    grid.json        one row per SAE: id, arch, lr, seed and the architecture's hyperparameters
    metrics.jsonl    one line per (logged step, SAE)
    checkpoints/     orbax checkpoints of the whole train state (+ stream position, grid)
    .lock            while a run trains here (:mod:`interplm_jax.lock`)
    input_transform.json   centring/scaling of the inputs, when asked (:mod:`interplm_jax.input_transform`)
    preflight/       the preflight's dry run and report (``interplm_jax.train.run.preflight``)

``out`` may be a local directory or a ``gs://`` URL (see :mod:`interplm_jax.paths`): the small
files are written whole (atomically, :mod:`interplm_jax.train.records`), checkpoints by orbax.

One loop (:func:`train_grids`) trains the grids of L >= 1 layers on one stream of batches (a
single sweep is L = 1): each batch is read once for all layers, and each layer's grid takes its
own step with the one compiled grid step, dispatched layer after layer (one program over all
layers was slower on XLA:CPU: its temporaries of every layer were live at once).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P

from interplm_jax import sae
from interplm_jax.errors import InputError, InterPLMError
from interplm_jax.input_transform import InputTransform
from interplm_jax.layout import SweepFiles
from interplm_jax.lock import locked
from interplm_jax.paths import AnyPath, as_path
from interplm_jax.progress import progress_bar
from interplm_jax.train import sharding as sh
from interplm_jax.train.checkpoint import Checkpoints, abstract_like, newest_readable
from interplm_jax.train.config import INT_HPARAMS, TrainConfig, build_grid, grid_arrays
from interplm_jax.train.records import MetricsFile, metric_lines, prepare_directory
from interplm_jax.train.step import StepSpec, init_state, make_step

log = logging.getLogger(__name__)


class TrainingError(InterPLMError):
    """Training cannot go on (e.g. a non-finite loss with ``on_nan: stop``)."""


class Stream(Protocol):
    """What the trainer reads: batches (rows, d) float32 of one layer, or (L, rows, d) of L
    layers, and the position of the next one."""

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
    build_grid(cfg, F=cfg.dict_size(d_model))
    with sweep_lock(out) if lock else contextlib.nullcontext():
        return train_grids(cfg, make_stream, d_model, {layer: out}, resume, extra_config,
                           {layer: input_transform})[layer]


def train_grids(cfg: TrainConfig, make_stream: StreamFactory, d_model: int,
                outs: dict[int | None, AnyPath], resume: bool = False,
                extra_config: dict | None = None,
                transforms: dict | None = None) -> dict[int | None, SweepResult]:
    """Train the grid of ``cfg`` on each layer of ``outs`` in one loop; write each layer's sweep
    directory ``outs[layer]``. The caller holds their locks (:func:`sweep_lock`).

    Args:
      make_stream: builds this host's stream: (rows, d) batches of the one layer, or (L, rows, d)
        of the layers of ``outs``, in its order.
      outs: layer -> its sweep directory (one entry, maybe ``None``: a single sweep).
      resume: continue from the newest step that every layer's directory has a checkpoint of.
      transforms: each layer's input transform (centring/scaling), or None.
    """
    layers = tuple(outs)
    transforms = transforms or {}
    grid = build_grid(cfg, F=cfg.dict_size(d_model))
    spec = make_spec(cfg, grid)
    G, B, F = len(grid), cfg.batch_size, cfg.dict_size(d_model)
    hp_host = grid_arrays(grid, ("lr", "seed") + spec.arch.hparams)
    sae_n, data_n = sh.mesh_shape(jax.device_count(), G, B, cfg.mesh_sae, cfg.mesh_data)
    mesh = sh.make_mesh(sae_n, data_n)
    host_index, host_count = sh.host_slice(mesh, B, d_model)
    log.info("grid of %d %s SAEs %d -> %d on layer(s) %s, mesh sae=%d x data=%d, host %d of %d",
             G, cfg.arch, d_model, F, list(layers), sae_n, data_n, host_index, host_count)
    c = compiled(spec, mesh, d_model, F, G, tuple(sorted(hp_host)))
    hp = jax.device_put(hp_host, c.hp_sharding)
    files = {layer: SweepFiles(outs[layer]) for layer in layers}
    metas = {layer: checkpoint_meta(cfg, spec, grid, d_model, layer) for layer in layers}
    ckpts = {layer: Checkpoints(files[layer].checkpoints, keep=cfg.keep_checkpoints) for layer in layers}
    try:
        latest, states, position = _restore(ckpts, metas, c.abstract, resume)
        if states is None:  # (every layer's grid starts as a single sweep's does)
            states = [c.init(hp) for _ in layers]
        for layer in layers:
            prepare_directory(files[layer], cfg, grid, d_model, layer, extra_config,
                              transforms.get(layer), latest)
        stream = make_stream(host_index, host_count, position)
        _train(cfg, grid, c, states, hp, mesh, stream, files, ckpts, metas, transforms,
               host_count, d_model)
    finally:
        for ck in ckpts.values():
            ck.close()
    params, ok, step = to_host(([s.params for s in states], [s.ok for s in states], states[0].step))
    return {layer: SweepResult(outs[layer], grid, params[i], np.asarray(ok[i]), int(step))
            for i, layer in enumerate(layers)}


def _train(cfg, grid, c, states, hp, mesh, stream, files, ckpts, metas, transforms,
           host_count, d_model) -> None:
    """The loop: a batch of every layer, each layer's grid step, metrics and checkpoints of
    each layer. ``states`` (one grid state per layer) is updated in place."""
    layers, B = tuple(files), cfg.batch_size
    L = len(layers)
    batches = iter(stream)
    warned = {layer: set() for layer in layers}
    metrics_files = {layer: MetricsFile(files[layer].metrics) for layer in layers}
    start = int(to_host(states[0].step))
    desc = f"train {cfg.arch} x{len(grid)}" + (f" x {L} layers" if L > 1 else "")
    bar = progress_bar(total=cfg.steps, desc=desc, unit="step", initial=start)
    expected = (L, B // host_count, d_model)
    t_last, s_last = time.perf_counter(), start
    try:
        for step in range(start, cfg.steps):
            local = np.asarray(next(batches), np.float32)
            if L == 1 and local.ndim == 2:  # a single layer's stream
                local = local[None]
            if local.shape != expected:
                raise InputError(f"stream gave a batch of shape {local.shape}; expected "
                                 f"{expected if L > 1 else expected[1:]} ("
                                 f"{'layers, ' if L > 1 else ''}batch_size / hosts, d_model)")
            position = stream.position
            metrics = []
            for i, layer in enumerate(layers):
                x = local[i] if transforms.get(layer) is None else transforms[layer](local[i])
                states[i], m = c.step(states[i], hp, sh.global_batch(mesh, x, B))
                metrics.append(m)
            done = step + 1
            bar.update(1)
            if done % cfg.log_every == 0 or done == cfg.steps:
                m, ok, bad = to_host((metrics, [s.ok for s in states], [s.bad_step for s in states]))
                now = time.perf_counter()
                rate = (done - s_last) / max(now - t_last, 1e-9)
                t_last, s_last = now, done
                bar.set_postfix(tok_s=f"{rate * B:.3g}", refresh=False)
                for i, layer in enumerate(layers):
                    metrics_files[layer].add(metric_lines(done, grid, m[i], done * B))
                    _check_finite(cfg, grid, ok[i], bad[i], warned[layer],
                                  f"layer {layer}: " if L > 1 else "")
            if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                for i, layer in enumerate(layers):
                    metrics_files[layer].flush()
                    ckpts[layer].save(done, states[i],
                                      {**metas[layer], "stream_position": position, "tokens": done * B})
        for ck in ckpts.values():
            ck.wait()
    finally:
        for mf in metrics_files.values():  # (lines after the last checkpoint are dropped again on resume)
            mf.flush()
        bar.close()


def _restore(ckpts: dict, metas: dict, abstract, resume: bool):
    """(step, states (one grid state per layer), stream position) of the newest step every
    layer has a readable checkpoint of; (None, None, None) when no layer has any. Newer
    checkpoints (unreadable ones, or a layer ahead of the others) are set aside as
    ``<step>.unreadable``."""
    saved = {layer: set(ck.manager.all_steps()) for layer, ck in ckpts.items()}
    outs = ", ".join(str(ck.directory.parent) for ck in ckpts.values())
    where = ", ".join(str(ck.directory) for ck in ckpts.values())
    if not any(saved.values()):
        if resume:
            log.info("%s: no checkpoint to resume from; starting at step 0", outs)
        return None, None, None
    if not resume:
        raise InputError(f"{outs}: holds checkpoints (newest at step "
                         f"{max(max(s) for s in saved.values() if s)}); pass --resume to "
                         "continue, or choose another --out")
    common = set.intersection(*saved.values())
    if not common:
        raise InputError(f"{where}: the layers have no checkpointed step in common (steps "
                         f"{ {k: sorted(v) for k, v in saved.items()} }); resume them one after "
                         "the other (train.layers_together: off)")

    def read_all(step):
        return [ck.restore(step, abstract, metas[layer]) for layer, ck in ckpts.items()]

    step, found = newest_readable(common, read_all, where)
    for ck in ckpts.values():
        ck.set_aside_newer(step)
    log.info("resuming %s at step %d", outs, step)
    return step, [s for s, _ in found], found[0][1]["stream_position"]


class Compiled:
    """The jitted init and step of a grid on a mesh, and the abstract state (with its
    shardings: the restore target). Hyperparameters: each a (G,) vector split over the mesh's
    ``sae`` axis."""

    def __init__(self, spec: StepSpec, mesh, d_model: int, F: int, G: int, hp_names: tuple[str, ...]):
        self.hp_abstract = {n: jax.ShapeDtypeStruct((G,), jnp.int32 if n in INT_HPARAMS else jnp.float32)
                            for n in hp_names}
        self.hp_sharding = {n: NamedSharding(mesh, P("sae")) for n in hp_names}
        one = jax.eval_shape(lambda h: init_state(spec, d_model, F, h), self.hp_abstract)
        shardings = sh.state_shardings(mesh, one)
        self.abstract = abstract_like(one, shardings)
        self.batch_abstract = jax.ShapeDtypeStruct((spec.batch_size, d_model), jnp.float32)
        self.init = jax.jit(lambda h: init_state(spec, d_model, F, h), out_shardings=shardings)
        self.step = jax.jit(make_step(spec),
                            in_shardings=(shardings, self.hp_sharding, sh.batch_sharding(mesh)),
                            out_shardings=(shardings, sh.replicated(mesh)), donate_argnums=(0,))

    def memory_analysis(self):
        """XLA's memory analysis of the compiled step (bytes per device)."""
        return self.step.lower(self.abstract, self.hp_abstract, self.batch_abstract).compile().memory_analysis()


@functools.lru_cache(maxsize=16)
def compiled(spec: StepSpec, mesh, d_model: int, F: int, G: int, hp_names: tuple[str, ...]) -> Compiled:
    """:class:`Compiled`, cached, so that sweeps of the same shape (e.g. the layers of one
    config, one after the other) compile once."""
    return Compiled(spec, mesh, d_model, F, G, hp_names)


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
