#!/usr/bin/env python
"""TopK train step: sparse (indices, values) decoder vs dense f W_dec, same run, same machine.

For each k and grid size G, builds the compiled grid step twice (``train.decoder`` dense and
sparse), warms both, then times them in interleaved rounds (dense, sparse, dense, ...) and
prints the medians and the ratio dense / sparse (> 1: sparse faster).

    python benchmarks/topk_decoder.py                          # 320 -> 10,240, B 2,048, k 32/64/128, G 1/4
    python benchmarks/topk_decoder.py --d 64 --F 1024 --batch 256 --ks 8 --grids 1   # a quick look
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import click
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from interplm_jax.train.config import TrainConfig, build_grid, grid_arrays  # noqa: E402
from interplm_jax.train.step import init_state, make_step  # noqa: E402
from interplm_jax.train.sweep import make_spec  # noqa: E402


def topk_step(d: int, F: int, B: int, G: int, k: int, decoder: str, dead: bool):
    """A runner ``run() -> None`` doing one compiled TopK grid step (state threaded, donated)."""
    cfg = TrainConfig(arch="topk", steps=1000, batch_size=B, d_sae=F, decoder=decoder,
                      dead_tokens=B if dead else 10_000_000,
                      grid={"lr": list(np.geomspace(1e-4, 1e-3, G))}, hparams={"k": k})
    grid = build_grid(cfg)
    spec = make_spec(cfg, grid)
    hp = jax.device_put(grid_arrays(grid, ("lr", "seed") + spec.arch.hparams))
    state = jax.jit(lambda h: init_state(spec, d, F, h))(hp)
    if dead:  # every feature silent long enough: AuxK's top d/2 dead latents take part
        state = state._replace(since_fired=state.since_fired + 10)
    x = jax.random.normal(jax.random.key(0), (B, d), jnp.float32)
    step = jax.jit(make_step(spec), donate_argnums=0)
    box = [state]

    def run():
        box[0], m = step(box[0], hp, x)
        jax.block_until_ready((box[0], m))

    return run


@click.command()
@click.option("--d", default=320, show_default=True)
@click.option("--F", "F", default=10_240, show_default=True)
@click.option("--batch", default=2048, show_default=True)
@click.option("--ks", default="32,64,128", show_default=True)
@click.option("--grids", default="1,4", show_default=True)
@click.option("--rounds", default=5, show_default=True, help="Interleaved timing rounds.")
@click.option("--dead/--no-dead", default=False, show_default=True,
              help="Start with every feature dead (AuxK active in every step).")
def main(d, F, batch, ks, grids, rounds, dead):
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} CPUs; "
          f"d={d} F={F} B={batch}, AuxK {'on' if dead else 'off (no dead features)'}, "
          f"{rounds} interleaved rounds, medians")
    print(f"{'k':>5} {'G':>3} {'dense s':>9} {'sparse s':>9} {'dense/sparse':>13} {'k/F':>7}")
    for G in [int(g) for g in grids.split(",")]:
        for k in [int(v) for v in ks.split(",")]:
            runs = {dec: topk_step(d, F, batch, G, k, dec, dead) for dec in ("dense", "sparse")}
            for r in runs.values():  # compile + warm
                r()
                r()
            times = {dec: [] for dec in runs}
            for _ in range(rounds):
                for dec, r in runs.items():
                    t0 = time.perf_counter()
                    r()
                    times[dec].append(time.perf_counter() - t0)
            td, ts = (statistics.median(times[k_]) for k_ in ("dense", "sparse"))
            print(f"{k:>5} {G:>3} {td:>9.3f} {ts:>9.3f} {td / ts:>12.2f}x {k / F:>7.4f}",
                  flush=True)
            del runs


if __name__ == "__main__":
    main()
