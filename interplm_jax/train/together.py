"""How many layers fit in memory to be trained together, in one process.

Layers trained together (:func:`~interplm_jax.train.sweep.train_grids` with several layers)
read each batch of token rows from the store once for all the layers (the stream yields
(L, rows, d)), and each layer's grid takes its step on its rows; layer ``l``'s grid sees exactly
the batches a sweep of that layer alone would (the stream's order depends on the seed, not the
layer), so the result is that of the one-after-the-other sweeps. Every layer keeps its own
sweep directory, written as :func:`~interplm_jax.train.sweep.train_sweep` writes it (config.yaml,
grid.json, metrics.jsonl, checkpoints of that layer's grid): the later stages, and a resume with
``layers_together: off``, read them unchanged. When the layers' states do not fit the memory
budget together (XLA's memory analysis of the compiled step), :func:`layer_groups` splits the
layers into the fewest groups that fit.
"""

from __future__ import annotations

import logging
import os

import jax
import numpy as np

from interplm_jax.train import sharding as sh
from interplm_jax.train.config import TrainConfig, build_grid, grid_arrays
from interplm_jax.train.sweep import compiled, make_spec

log = logging.getLogger(__name__)


def memory_budget(cfg: TrainConfig) -> int:
    """Bytes per device a step may use: ``cfg.memory_budget_gb``, else the device's own limit
    (``bytes_limit`` of its memory statistics), else (the CPU) half the machine's memory."""
    if cfg.memory_budget_gb:
        return int(cfg.memory_budget_gb * 2**30)
    stats = jax.devices()[0].memory_stats() or {}
    if stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


def step_bytes(cfg: TrainConfig, d_model: int) -> tuple[int, int]:
    """(bytes per device of one layer's grid step: arguments, outputs not aliased to them and
    temporaries; bytes per device of one layer's train state), from XLA's memory analysis."""
    grid = build_grid(cfg, F=cfg.dict_size(d_model))
    spec = make_spec(cfg, grid)
    G = len(grid)
    mesh = sh.make_mesh(*sh.mesh_shape(jax.device_count(), G, cfg.batch_size, cfg.mesh_sae,
                                       cfg.mesh_data))
    hp_names = tuple(sorted(grid_arrays(grid, ("lr", "seed") + spec.arch.hparams)))
    a = compiled(spec, mesh, d_model, cfg.dict_size(d_model), G, hp_names).memory_analysis()
    step = (a.argument_size_in_bytes + a.output_size_in_bytes - a.alias_size_in_bytes
            + a.temp_size_in_bytes)
    return step, a.alias_size_in_bytes  # (the donated state is what the outputs alias)


def stacked_bytes(cfg: TrainConfig, n_layers: int, d_model: int) -> int:
    """Bytes per device of ``n_layers`` layers trained together: every layer's train state,
    and the temporaries of one grid step (the layers step one after the other)."""
    step, state = step_bytes(cfg, d_model)
    return step + (n_layers - 1) * state


def layer_groups(cfg: TrainConfig, layers: tuple[int, ...], d_model: int) -> list[tuple[int, ...]]:
    """The layers in the fewest groups of (nearly) equal size that fit :func:`memory_budget`
    (:func:`stacked_bytes`): one group with ``layers_together: on``, one per layer with ``off``."""
    if cfg.layers_together == "off" or len(layers) == 1:
        return [(layer,) for layer in layers]
    if cfg.layers_together == "on":
        return [tuple(layers)]
    (step, state), budget = step_bytes(cfg, d_model), memory_budget(cfg)
    need = step + (len(layers) - 1) * state
    if need <= budget:
        log.info("layers %s together: %.3g GB per device of a budget of %.3g GB", list(layers),
                 need / 2**30, budget / 2**30)
        return [tuple(layers)]
    fit = 1 + max(0, int((budget - step) // max(state, 1)))
    n_groups = -(-len(layers) // fit)
    groups = [tuple(g.tolist()) for g in np.array_split(np.asarray(layers), n_groups)]
    log.warning("layers %s together need %.3g GB per device, over the budget of %.3g GB "
                "(train.memory_budget_gb): training them in %d groups %s", list(layers),
                need / 2**30, budget / 2**30, n_groups, groups)
    return groups
