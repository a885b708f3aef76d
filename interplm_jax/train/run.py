"""Train the sweeps of a config on an activation store: one sweep directory per layer."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
from pathlib import Path

import jax
import numpy as np
from jax.experimental import multihost_utils

from interplm_jax.data import TokenStream, check_finite
from interplm_jax.errors import InputError
from interplm_jax.input_transform import InputTransform
from interplm_jax.layout import SweepFiles, sweep_dir
from interplm_jax.paths import AnyPath, display, rmtree, write_atomic
from interplm_jax.store import ActivationStore
from interplm_jax.store.stats import LayerStats, nonfinite_shards, store_stats
from interplm_jax.sweep_saes import checkpoint_steps, metric_rows
from interplm_jax.train.config import TrainConfig, build_grid
from interplm_jax.train.preflight import check_dry_run, check_statistics
from interplm_jax.train.sharding import maybe_initialize_distributed
from interplm_jax.train.sweep import SweepResult, sweep_lock, train_grids, train_sweep
from interplm_jax.train.together import layer_groups

log = logging.getLogger(__name__)


def train_layers(cfg: TrainConfig, store: str | Path | None = None, out: str | Path | None = None,
                 resume: bool = False, layers: tuple[int, ...] | None = None,
                 where: str = "train") -> dict[int, SweepResult]:
    """Train the grid of ``cfg`` on each chosen layer of the store: the layers together
    (:mod:`interplm_jax.train.together`, in groups that fit the memory budget) or, with
    ``layers_together: off``, one after the other; one sweep directory per layer either way.

    ``store``/``out`` default to the config's; ``layers`` to the config's, then all the store's.
    A layer whose sweep already finished is skipped with ``resume`` (its final checkpoint is
    read back). Joins the other hosts first when launched on several (jax.distributed).
    Options that depend on the store (TopK's k <= F) and each layer's rows, as far as it is
    cheap (:func:`check_rows`), are checked before anything is written;
    ``where`` names the config section in those messages (e.g. ``config.yaml:train``).
    """
    maybe_initialize_distributed()
    store = store or cfg.store
    out = out or cfg.out
    if not store:
        raise InputError("no activation store: give --store or train.store in the config")
    if not out:
        raise InputError("no output directory: give --out or train.out in the config")
    acts = ActivationStore.open(store)
    chosen = tuple(layers or cfg.layers or acts.layers)
    missing = [layer for layer in chosen if layer not in acts.layers]
    if missing:
        raise InputError(f"{store}: layer(s) {missing} not in the store (layers {list(acts.layers)})")
    build_grid(cfg, where, F=cfg.dict_size(acts.d_model))
    stats = {layer: store_stats(acts, layer) for layer in chosen}
    for layer in chosen:  # what can be found before anything is written
        first = TokenStream(acts, layer, cfg.batch_size, cfg.seed).shard_order(0)[0]
        check_rows(acts, layer, stats[layer], first)
    results = {}
    extra = {"store": display(store), "model": acts.manifest.get("model")}
    groups = [g for part in _by_progress(cfg, out, chosen, resume)
              for g in layer_groups(cfg, part, acts.d_model)]
    for group in groups:
        def make_stream(host_index, host_count, position, layer=group if len(group) > 1 else group[0]):
            return TokenStream(acts, layer, batch_size=cfg.batch_size, seed=cfg.seed,
                               host_index=host_index, host_count=host_count, position=position)

        transforms, warnings = {}, {}
        with contextlib.ExitStack() as locks:
            for layer in group:
                locks.enter_context(sweep_lock(sweep_dir(out, layer)))  # the preflight writes there too
                log.info("layer %d: %d tokens of width %d", layer, acts.n_tokens, acts.d_model)
                transforms[layer] = InputTransform.of(cfg.input_center, cfg.input_scale, stats[layer])
                warnings[layer] = preflight(cfg, stats[layer], transforms[layer], functools.partial(
                    make_stream, layer=layer), acts.d_model, sweep_dir(out, layer), layer, resume)
            results.update(train_grids(cfg, make_stream, acts.d_model,
                                       {layer: sweep_dir(out, layer) for layer in group},
                                       resume, extra, transforms))
        for layer in group:
            results[layer].preflight = warnings[layer]
    return results


def _by_progress(cfg: TrainConfig, out, layers: tuple[int, ...], resume: bool) -> list[tuple[int, ...]]:
    """The layers apart by how far a resumed run's sweeps got (finished, started, not started:
    e.g. a run of ``layers_together: off`` killed after its first layer); only layers at the
    same stage may train together."""
    if not resume:
        return [layers]
    stage = {}
    for layer in layers:
        steps = checkpoint_steps(sweep_dir(out, layer))
        stage[layer] = "new" if not steps else "done" if max(steps) >= cfg.steps else "started"
    parts = (tuple(layer for layer in layers if stage[layer] == s) for s in ("done", "started", "new"))
    return [p for p in parts if p]


def check_rows(acts: ActivationStore, layer: int, stats: LayerStats, first_shard: int) -> None:
    """Check a layer's rows as far as it is cheap: NaN/Inf anywhere (``stats``, the layer's
    statistics, tell; their shard partials say where), and a damaged chunk in ``first_shard``,
    the shard training reads first (by reading it).

    Raises:
      StoreError (StoreDamage) naming the layer, shard, first bad row and its protein.
    """
    shards = [first_shard]
    if not np.isfinite(stats.absmax).all():
        shards = nonfinite_shards(acts, layer) or range(acts.n_shards)
    for i in shards:
        _, _, r0, r1 = acts.shard_bounds(i)
        check_finite(acts, layer, i, np.arange(r0, r1), acts.rows(layer, r0, r1))


def preflight(cfg: TrainConfig, stats: LayerStats, transform: InputTransform, make_stream,
              d_model: int, out: AnyPath, layer: int, resume: bool) -> list[str]:
    """The preflight of one layer's sweep (:mod:`interplm_jax.train.preflight`): statistics
    checks, then a dry run of the grid for ``cfg.preflight_steps`` steps (at most a tenth of
    ``cfg.steps``) in ``<out>/preflight``. Warnings are logged and written to
    ``<out>/preflight/preflight.json``, which a resumed sweep reuses.

    Raises:
      InputError: with ``preflight: error``, when there is any warning.
    """
    started = bool(checkpoint_steps(out)) if out.exists() else False
    if cfg.preflight == "off" or (started and not resume):  # (train_sweep refuses the latter)
        return []
    dry_dir, report_path = SweepFiles(out).preflight, SweepFiles(out).preflight_report
    if started and report_path.exists():
        warnings = json.loads(report_path.read_text())["warnings"]
    else:
        warnings = check_statistics(stats, cfg.input_center, cfg.preflight_max_mean_ratio)
        n = min(cfg.preflight_steps, max(1, cfg.steps // 10))
        if n:
            if jax.process_index() == 0 and dry_dir.exists():
                rmtree(dry_dir)  # a dry run of another config or an older store
            if jax.process_count() > 1:
                multihost_utils.sync_global_devices("preflight dry run directory cleared")
            dry = dataclasses.replace(
                cfg, steps=n, log_every=n, checkpoint_every=n, keep_checkpoints=1,
                warmup_steps=None, decay_start=-1, sparsity_warmup_steps=None, resample_steps=None,
                dead_tokens=max(1, n // 2) * cfg.batch_size, on_nan="mask", preflight="off")
            log.info("layer %d: preflight dry run of the grid, %d steps", layer, n)
            r = train_sweep(dry, make_stream, d_model, dry_dir, layer=layer, input_transform=transform)
            last = {row["sae"]: row for row in metric_rows(dry_dir / "metrics.jsonl")}
            warnings += check_dry_run(r.grid, r.ok, last, n, cfg.preflight_max_dead)
        if jax.process_index() == 0:
            write_atomic(report_path, json.dumps({
                "layer": layer, "statistics": stats.summary(), "input_scale": transform.scale,
                "input_centred": cfg.input_center, "dry_run_steps": n, "warnings": warnings},
                indent=1) + "\n")
    for w in warnings:
        log.warning("preflight: %s", w)
    if warnings and cfg.preflight == "error":
        raise InputError(f"preflight of layer {layer} (train.preflight: error):\n  "
                         + "\n  ".join(warnings))
    return warnings
