"""Train the grids of several layers in one process: one compiled step over layers x grid.

Each batch of token rows is read from the store once for all the layers (the stream yields
(L, rows, d)); layer ``l``'s grid sees exactly the batches a sweep of that layer alone would
(the stream's order depends on the seed, not the layer), so the result is that of the
one-after-the-other sweeps. Every layer keeps its own sweep directory, written as
:func:`~interplm_jax.train.sweep.train_sweep` writes it (config.yaml, grid.json, metrics.jsonl,
checkpoints of that layer's grid): the later stages, and a resume with ``layers_together: off``,
read them unchanged. When the stacked step does not fit the memory budget (XLA's memory
analysis of the compiled step), :func:`layer_groups` splits the layers into the fewest groups
that fit.
"""

from __future__ import annotations

import functools
import logging
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from interplm_jax.errors import InputError
from interplm_jax.input_transform import InputTransform
from interplm_jax.layout import SweepFiles
from interplm_jax.paths import AnyPath
from interplm_jax.progress import progress_bar
from interplm_jax.train import sharding as sh
from interplm_jax.train.checkpoint import Checkpoints, abstract_like, newest_readable
from interplm_jax.train.config import TrainConfig, build_grid, grid_arrays
from interplm_jax.train.step import StepSpec, init_state, make_step
from interplm_jax.train.sweep import (StreamFactory, SweepResult, _check_finite, _metric_lines,
                                      _MetricsFile, checkpoint_meta, hparam_layout, make_spec,
                                      prepare_directory, to_host)

log = logging.getLogger(__name__)


def train_together(cfg: TrainConfig, layers: tuple[int, ...], make_stream: StreamFactory,
                   d_model: int, outs: dict[int, AnyPath], resume: bool = False,
                   extra_config: dict | None = None,
                   transforms: dict[int, InputTransform | None] | None = None) -> dict[int, SweepResult]:
    """Train the grid of ``cfg`` on each of ``layers`` with one step; write each layer's sweep
    directory ``outs[layer]``. The caller holds their locks (:func:`~interplm_jax.train.sweep.sweep_lock`).

    Args:
      make_stream: builds this host's stream of (L, rows, d) batches, layers in ``layers`` order.
      transforms: each layer's input transform (centring/scaling), or None.
      resume: continue from the newest step that every layer's directory has a checkpoint of.
    """
    grid = build_grid(cfg, F=cfg.dict_size(d_model))
    spec = make_spec(cfg, grid)
    transforms = transforms or {}
    L, G, B, F = len(layers), len(grid), cfg.batch_size, cfg.dict_size(d_model)
    hp_host = grid_arrays(grid, ("lr", "seed") + spec.arch.hparams)
    sae_n, data_n = sh.mesh_shape(jax.device_count(), G, B, cfg.mesh_sae, cfg.mesh_data)
    mesh = sh.make_mesh(sae_n, data_n)
    host_index, host_count = sh.host_slice(mesh, B, d_model)
    log.info("layers %s together: grids of %d %s SAEs %d -> %d, mesh sae=%d x data=%d",
             list(layers), G, cfg.arch, d_model, F, sae_n, data_n)
    c = _compiled(spec, mesh, d_model, F, G, tuple(sorted(hp_host)), L)
    hp = jax.device_put(hp_host, c.hp_sharding)
    files = {layer: SweepFiles(outs[layer]) for layer in layers}
    metas = {layer: checkpoint_meta(cfg, spec, grid, d_model, layer) for layer in layers}
    ckpts = {layer: Checkpoints(files[layer].checkpoints, keep=cfg.keep_checkpoints) for layer in layers}
    try:
        latest, state, position = _restore(ckpts, metas, c, resume)
        if state is None:
            state = c.init(hp)
        for layer in layers:
            prepare_directory(files[layer], cfg, grid, d_model, layer, extra_config,
                              transforms.get(layer), latest)
        state = _train(cfg, layers, grid, c, state, hp, mesh, make_stream(host_index, host_count, position),
                       files, ckpts, metas, transforms, host_count, d_model)
    finally:
        for ck in ckpts.values():
            ck.close()
    params, ok, step = to_host(([s.params for s in state], [s.ok for s in state], state[0].step))
    return {layer: SweepResult(outs[layer], grid, params[i], np.asarray(ok[i]), int(step))
            for i, layer in enumerate(layers)}


def _train(cfg, layers, grid, c, state, hp, mesh, stream, files, ckpts, metas, transforms,
           host_count, d_model):
    """The loop: a batch of every layer, one step, metrics and checkpoints of each layer."""
    B = cfg.batch_size
    batches = iter(stream)
    warned = {layer: set() for layer in layers}
    metrics_files = {layer: _MetricsFile(files[layer].metrics) for layer in layers}
    start = int(to_host(state[0].step))
    bar = progress_bar(total=cfg.steps, desc=f"train {cfg.arch} x{len(grid)} x {len(layers)} layers",
                       unit="step", initial=start)
    expected = (len(layers), B // host_count, d_model)
    t_last, s_last = time.perf_counter(), start
    try:
        for step in range(start, cfg.steps):
            local = np.asarray(next(batches), np.float32)
            if local.shape != expected:
                raise InputError(f"stream gave a batch of shape {local.shape}; expected {expected} "
                                 "(layers, batch_size / hosts, d_model)")
            for i, layer in enumerate(layers):
                if transforms.get(layer) is not None:
                    local[i] = transforms[layer](local[i])
            position = stream.position
            state, metrics = c.step(state, hp, sh.global_batch(mesh, local, B))
            done = step + 1
            bar.update(1)
            if done % cfg.log_every == 0 or done == cfg.steps:
                m, ok, bad = to_host((metrics, [s.ok for s in state], [s.bad_step for s in state]))
                now = time.perf_counter()
                rate = (done - s_last) / max(now - t_last, 1e-9)
                t_last, s_last = now, done
                bar.set_postfix(tok_s=f"{rate * B:.3g}", refresh=False)
                for i, layer in enumerate(layers):
                    metrics_files[layer].add(_metric_lines(done, grid, {k: v[i] for k, v in m.items()},
                                                           done * B))
                    _check_finite(cfg, grid, ok[i], bad[i], warned[layer], f"layer {layer}: ")
            if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                for i, layer in enumerate(layers):
                    metrics_files[layer].flush()
                    ckpts[layer].save(done, state[i],
                                      {**metas[layer], "stream_position": position, "tokens": done * B})
        for ck in ckpts.values():
            ck.wait()
    finally:
        for mf in metrics_files.values():
            mf.flush()
        bar.close()
    return state


def _restore(ckpts: dict[int, Checkpoints], metas: dict[int, dict], c, resume: bool):
    """(step, state (a tuple of the layers' grid states), stream position) of the newest step
    every layer has a readable
    checkpoint of; (None, None, None) when no layer has any."""
    saved = {layer: set(ck.manager.all_steps()) for layer, ck in ckpts.items()}
    if not any(saved.values()):
        if resume:
            log.info("layers %s: no checkpoint to resume from; starting at step 0", list(ckpts))
        return None, None, None
    where = ", ".join(str(ck.directory) for ck in ckpts.values())
    if not resume:
        newest = {layer: max(s) for layer, s in saved.items() if s}
        raise InputError(f"{where}: hold checkpoints (newest steps {newest}); pass --resume to "
                         "continue, or choose another --out")
    common = set.intersection(*saved.values())
    if not common:
        raise InputError(f"{where}: the layers have no checkpointed step in common (steps "
                         f"{ {k: sorted(v) for k, v in saved.items()} }); resume them one after "
                         "the other (train.layers_together: off)")

    def read_all(step):
        return [ck.restore(step, c.abstract_one, metas[layer]) for layer, ck in ckpts.items()]

    step, found = newest_readable(common, read_all, where)
    for ck in ckpts.values():
        ck.set_aside_newer(step)
    log.info("resuming layers %s at step %d", list(ckpts), step)
    state = tuple(s for s, _ in found)
    return step, state, found[0][1]["stream_position"]


class _Compiled:
    """The jitted pieces of a layered grid on a mesh (see :func:`_compiled`)."""

    def __init__(self, spec: StepSpec, mesh, d_model: int, F: int, G: int,
                 hp_names: tuple[str, ...], L: int):
        hp_abstract, self.hp_sharding = hparam_layout(mesh, G, hp_names)
        one = jax.eval_shape(lambda h: init_state(spec, d_model, F, h), hp_abstract)
        self.abstract_one = abstract_like(one, sh.state_shardings(mesh, one))
        layered = (one,) * L
        shardings = sh.state_shardings(mesh, layered)
        # (every layer's grid starts as a single-layer sweep's does)
        self.init = jax.jit(lambda h: (init_state(spec, d_model, F, h),) * L, out_shardings=shardings)
        self.step = jax.jit(make_step(spec._replace(layered=True)),
                            in_shardings=(shardings, self.hp_sharding, sh.batch_sharding(mesh, True)),
                            out_shardings=(shardings, sh.replicated(mesh)), donate_argnums=(0,))
        self.abstract = (abstract_like(layered, shardings), hp_abstract,
                         jax.ShapeDtypeStruct((L, spec.batch_size, d_model), jnp.float32))

    def device_bytes(self) -> int:
        """Bytes per device the compiled step needs (arguments, outputs not aliased to them,
        temporaries), from XLA's memory analysis."""
        a = self.step.lower(*self.abstract).compile().memory_analysis()
        return (a.argument_size_in_bytes + a.output_size_in_bytes - a.alias_size_in_bytes
                + a.temp_size_in_bytes)


@functools.lru_cache(maxsize=8)
def _compiled(spec: StepSpec, mesh, d_model: int, F: int, G: int, hp_names: tuple[str, ...],
              L: int) -> _Compiled:
    return _Compiled(spec, mesh, d_model, F, G, hp_names, L)


def memory_budget(cfg: TrainConfig) -> int:
    """Bytes per device a step may use: ``cfg.memory_budget_gb``, else the device's own limit
    (``bytes_limit`` of its memory statistics), else (the CPU) half the machine's memory."""
    if cfg.memory_budget_gb:
        return int(cfg.memory_budget_gb * 2**30)
    stats = jax.devices()[0].memory_stats() or {}
    if stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


def stacked_bytes(cfg: TrainConfig, n_layers: int, d_model: int) -> int:
    """Bytes per device of the step of ``n_layers`` layers' grids (:meth:`_Compiled.device_bytes`)."""
    grid = build_grid(cfg, F=cfg.dict_size(d_model))
    spec = make_spec(cfg, grid)
    G = len(grid)
    mesh = sh.make_mesh(*sh.mesh_shape(jax.device_count(), G, cfg.batch_size, cfg.mesh_sae,
                                       cfg.mesh_data))
    hp_names = tuple(sorted(grid_arrays(grid, ("lr", "seed") + spec.arch.hparams)))
    return _compiled(spec, mesh, d_model, cfg.dict_size(d_model), G, hp_names, n_layers).device_bytes()


def layer_groups(cfg: TrainConfig, layers: tuple[int, ...], d_model: int) -> list[tuple[int, ...]]:
    """The layers in the fewest groups of (nearly) equal size whose stacked step fits
    :func:`memory_budget`: one group with ``layers_together: on``, one per layer with ``off``."""
    if cfg.layers_together == "off" or len(layers) == 1:
        return [(layer,) for layer in layers]
    if cfg.layers_together == "on":
        return [tuple(layers)]
    need, budget = stacked_bytes(cfg, len(layers), d_model), memory_budget(cfg)
    if need <= budget:
        log.info("layers %s together: %.3g GB per device of a budget of %.3g GB", list(layers),
                 need / 2**30, budget / 2**30)
        return [tuple(layers)]
    per_layer = need / len(layers)
    n_groups = -(-len(layers) // max(1, int(budget // per_layer)))
    groups = [tuple(g.tolist()) for g in np.array_split(np.asarray(layers), n_groups)]
    log.warning("layers %s together need %.3g GB per device, over the budget of %.3g GB "
                "(train.memory_budget_gb): training them in %d groups %s", list(layers),
                need / 2**30, budget / 2**30, n_groups, groups)
    return groups
