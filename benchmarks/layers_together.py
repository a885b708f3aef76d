#!/usr/bin/env python
"""Layers trained together vs one after the other: wall clock and store bytes read.

``train_layers`` on a store of ``--layers`` layers (random activations, a real protein length
mix), a grid of ``--grid`` ReLU SAEs per layer, ``--steps`` steps each, with
``layers_together: on`` (one loop, each batch of token rows read once for all
layers) and ``off`` (one layer's sweep after the other, as before), in turn within each round;
medians of ``--rounds`` rounds after a warm-up round (compilation). Bytes read are the
process's ``rchar`` (/proc/self/io: every byte read through a system call, page cache
included) during the run. Preflight off, one checkpoint per layer at the end, in both. Also
timed in each round: the layers' grid steps alone (the compiled step on batches already on the
device), the part of a run that no way of reading the layers can save.

    python benchmarks/layers_together.py          # 6 layers x 4 SAEs, 320 -> 1,280, batch 1,024
    python benchmarks/layers_together.py --d 32 --F 128 --batch 128 --steps 10 --rounds 1  # a quick look
"""

from __future__ import annotations

import logging
import os
import statistics
import subprocess
import tempfile
import time

import click
import jax
import numpy as np

from _common import real_proteins
from interplm_jax.store import write_store
from interplm_jax.train import TrainConfig
from interplm_jax.train import sharding as sh
from interplm_jax.train.config import build_grid, grid_arrays
from interplm_jax.train.run import train_layers
from interplm_jax.train.sweep import compiled, make_spec


def bytes_read() -> int:
    """This process's bytes read through system calls so far (0 where /proc is missing)."""
    try:
        with open("/proc/self/io") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))
    except OSError:
        return 0


def run(cfg: TrainConfig, store: str, out: str) -> tuple[float, int]:
    """(seconds, bytes read) of one train_layers run into a fresh ``out``."""
    b0, t0 = bytes_read(), time.perf_counter()
    train_layers(cfg, store, out)
    return time.perf_counter() - t0, bytes_read() - b0


def steps_alone(cfg: TrainConfig, n_layers: int, d: int):
    """A function timing ``cfg.steps`` grid steps of each of ``n_layers`` layers from the
    initial state, on random batches already on the device: (seconds, 0)."""
    grid = build_grid(cfg)
    spec = make_spec(cfg, grid)
    hp_host = grid_arrays(grid, ("lr", "seed") + spec.arch.hparams)
    mesh = sh.make_mesh(*sh.mesh_shape(jax.device_count(), len(grid), cfg.batch_size))
    c = compiled(spec, mesh, d, cfg.d_sae, len(grid), tuple(sorted(hp_host)))
    hp = jax.device_put(hp_host, c.hp_sharding)
    rng = np.random.default_rng(1)
    xs = [sh.global_batch(mesh, rng.normal(size=(cfg.batch_size, d)).astype(np.float32), cfg.batch_size)
          for _ in range(cfg.steps)]

    def run_steps():
        t0 = time.perf_counter()
        for _ in range(n_layers):
            state = c.init(hp)
            for x in xs:
                state, _ = c.step(state, hp, x)
            jax.block_until_ready(state)
        return time.perf_counter() - t0, 0

    return run_steps


@click.command()
@click.option("--layers", "n_layers", default=6, show_default=True)
@click.option("--grid", "G", default=4, show_default=True, help="SAEs per layer.")
@click.option("--d", default=320, show_default=True)
@click.option("--F", "F", default=1280, show_default=True)
@click.option("--batch", default=1024, show_default=True)
@click.option("--steps", default=20, show_default=True)
@click.option("--proteins", default=80, show_default=True)
@click.option("--rounds", default=3, show_default=True)
def main(n_layers, G, d, F, batch, steps, proteins, rounds):
    logging.basicConfig(level=logging.WARNING)
    rng = np.random.default_rng(0)
    prots, source = real_proteins(proteins, seed=0)
    lengths = [len(p.sequence) + 2 for p in prots]  # (BOS/EOS, as the extractor stores them)
    layers = tuple(range(1, n_layers + 1))
    print(f"load: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    with tempfile.TemporaryDirectory() as tmp:
        acts = {L: [rng.normal(size=(n, d)).astype(np.float32) for n in lengths] for L in layers}
        store = write_store(f"{tmp}/store", [p.id for p in prots], acts, shard_size=20).url
        del acts
        base = dict(arch="relu", d_sae=F, batch_size=batch, steps=steps, layers=layers,
                    grid={"lr": [1e-4, 3e-4], "l1": [0.05, 0.1]} if G == 4 else {"seed": list(range(G))},
                    log_every=max(1, steps // 2), checkpoint_every=steps, preflight="off")
        configs = {mode: TrainConfig(**base, layers_together=mode) for mode in ("on", "off")}
        print(f"{n_layers} layers x {G} ReLU SAEs {d} -> {F}, batch {batch}, {steps} steps; "
              f"{sum(lengths)} tokens of {len(prots)} proteins ({source}) per layer")
        results = {mode: [] for mode in (*configs, "steps")}
        grid_steps = steps_alone(configs["off"], n_layers, d)
        for r in range(rounds + 1):  # round 0: warm-up (compilation)
            for mode in results:
                seconds, nbytes = (grid_steps() if mode == "steps"
                                   else run(configs[mode], store, f"{tmp}/out_{mode}_{r}"))
                if r:
                    results[mode].append((seconds, nbytes))
    med = {m: (statistics.median(s for s, _ in v), statistics.median(b for _, b in v))
           for m, v in results.items()}
    for mode, label in (("off", "one layer after the other"), ("on", "layers together")):
        s, b = med[mode]
        print(f"  {label:26s} {s:8.2f} s   {b / 2**20:9.1f} MiB read   "
              f"{n_layers * steps * batch / s:10.4g} tokens/s (all layers)")
    print(f"  together / sequential: {med['off'][0] / med['on'][0]:.2f}x faster, "
          f"{med['on'][1] / max(med['off'][1], 1):.2f}x the bytes read "
          f"(medians of {rounds} round(s); {os.cpu_count()} CPUs)")
    print(f"  the grid steps alone: {med['steps'][0]:.2f} s, {med['steps'][0] / med['off'][0]:.0%} of "
          f"the sequential run (a run doing nothing else would be {med['off'][0] / med['steps'][0]:.2f}x faster)")
    print(f"load: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")


if __name__ == "__main__":
    main()
