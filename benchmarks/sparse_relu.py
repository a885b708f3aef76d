#!/usr/bin/env python
"""ReLU train step: the sparse step (the batch's active entries listed) vs the dense step.

For each target L0 builds a *constructed* sparse ReLU SAE (torch-default encoder; each
feature's bias set so that it fires on about L0/F of the tokens, on tokens whose norms vary
like real activations', so rows hold a spread of active counts), sets the capacity to
``--headroom`` x the batch's mean L0 per token, and times the compiled grid step with
``train.decoder`` dense and sparse in interleaved rounds (medians; > 1: sparse faster).

With ``--reference`` it also times the reference torch ReLU trainer's update of one SAE and
prints the grid of G for ``--grid-steps`` steps vs the reference's G runs (each paying the
measured process start-up), as ``benchmarks/train_step.py`` does for the dense step.

    python benchmarks/sparse_relu.py                                 # 320 -> 10,240, B 2,048
    python benchmarks/sparse_relu.py --l0s 128 --grids 20 --reference --rounds 3
    python benchmarks/sparse_relu.py --d 64 --F 2048 --batch 256 --l0s 16 --rounds 2  # a look
    python benchmarks/sparse_relu.py --parts     # the sparse step's pieces vs one dense product

``--parts`` times the sparse step's pieces alone, in units of one dense B x d x F product
measured in the same run: the compaction of the (B, F) mask into the list, the decoder's
forward and backward (``sparse.decode_entries``) and the encoder's backward
(``sparse.gather_product``: dW_enc by scatter-add).
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import click
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import interleaved, median_time  # noqa: E402
from train_step import REFERENCE, reference_startup, reference_update  # noqa: E402

from interplm_jax.sae import relu, sparse  # noqa: E402
from interplm_jax.train.config import TrainConfig, build_grid, grid_arrays  # noqa: E402
from interplm_jax.train.step import init_state, make_step  # noqa: E402
from interplm_jax.train.sweep import make_spec  # noqa: E402


def tokens(d: int, B: int, seed: int = 0) -> jax.Array:
    """(B, d) Gaussian tokens with log-normal norms (sd 0.1), so row L0s spread out."""
    k1, k2 = jax.random.split(jax.random.key(seed))
    scale = jnp.exp(0.1 * jax.random.normal(k2, (B, 1)))
    return jax.random.normal(k1, (B, d)) * scale


def sparse_biases(params, x, l0: float) -> jax.Array:
    """b_enc making feature i fire on a fraction l0/F of the tokens x: (F,)."""
    pre = relu.pre_activations({**params, "b_enc": jnp.zeros_like(params["b_enc"])}, x)
    q = 1.0 - l0 / pre.shape[-1]
    return -jnp.quantile(pre, q, axis=0)


def relu_step(d, F, B, G, l0, decoder, capacity, x):
    """(run, mean active entries per token) for one compiled ReLU grid step (state donated)."""
    cfg = TrainConfig(arch="relu", steps=100_000, batch_size=B, d_sae=F, decoder=decoder,
                      sparse_capacity=capacity, grid={"lr": list(np.geomspace(1e-6, 1e-5, G))},
                      hparams={"l1": 0.1})
    grid = build_grid(cfg)
    spec = make_spec(cfg, grid)
    hp = jax.device_put(grid_arrays(grid, ("lr", "seed") + spec.arch.hparams))
    state = jax.jit(lambda h: init_state(spec, d, F, h))(hp)
    b_enc = jax.vmap(lambda p: sparse_biases(p, x, l0))(state.params)
    state = state._replace(params={**state.params, "b_enc": b_enc})
    pre = jax.vmap(lambda p: relu.pre_activations(p, x))(state.params)
    mean = float(jnp.mean(jnp.sum(pre > 0, axis=-1)))
    step = jax.jit(make_step(spec), donate_argnums=0)
    box = [state]

    def run():
        box[0], m = step(box[0], hp, x)
        return jax.device_get(m)

    return run, mean


def part_costs(d: int, F: int, B: int, l0s: list[float]) -> None:
    """The sparse step's pieces in units of one dense (B, d) @ (d, F) product, same run."""
    k = jax.random.split(jax.random.key(0), 4)
    x = tokens(d, B)
    W_enc, W_dec = jax.random.normal(k[0], (d, F)) / d**0.5, jax.random.normal(k[1], (F, d))
    dy = jax.random.normal(k[2], (B, d))
    raw = x @ W_enc

    def timed(fn, *args):
        fn = jax.jit(fn)
        jax.block_until_ready(fn(*args))
        return median_time(lambda: jax.block_until_ready(fn(*args)), repeats=5)

    unit = timed(lambda a, b: a @ b, x, W_enc)
    print(f"one product: {unit * 1e3:.0f} ms = 1 unit; a pass over (B, F), ReLU(pre + b): "
          f"{timed(lambda p, b: jax.nn.relu(p + b), raw, W_enc[0]) / unit:.2f}", flush=True)
    print(f"{'L0':>5} {'slots/token':>11} {'compact':>8} {'decoder fwd+bwd':>16} "
          f"{'encoder bwd':>12}  (units)")
    for l0 in l0s:
        b_enc = -jnp.quantile(raw, 1.0 - l0 / F, axis=0)
        mean = float(jnp.mean(jnp.sum(raw + b_enc > 0, axis=-1)))
        N = B * math.ceil(1.25 * mean)
        e, _ = jax.jit(lambda r, b: sparse.compact(r + b > 0, N))(raw, b_enc)
        v = jnp.where(e.valid, 1.0, 0.0)
        compact = timed(lambda r, b: sparse.compact(r + b > 0, N), raw, b_enc)

        def decoder(W, v, e, dy):
            y, vjp = jax.vjp(lambda W, v: sparse.decode_entries(W, e, v, B), W, v)
            return y, vjp(dy)

        def encoder(W, v, e, x, raw):
            _, vjp = jax.vjp(lambda b, W: sparse.gather_product(x, b, W, raw, e), x[0], W)
            return vjp(v)

        print(f"{mean:>5.0f} {N // B:>11} {compact / unit:>8.2f} "
              f"{timed(decoder, W_dec, v, e, dy) / unit:>16.2f} "
              f"{timed(encoder, W_enc, v, e, x, raw) / unit:>12.2f}", flush=True)


@click.command()
@click.option("--d", default=320, show_default=True)
@click.option("--F", "F", default=10_240, show_default=True)
@click.option("--batch", default=2048, show_default=True)
@click.option("--l0s", default="32,64,128,256", show_default=True)
@click.option("--grids", default="1", show_default=True)
@click.option("--rounds", default=5, show_default=True, help="Interleaved timing rounds.")
@click.option("--reference/--no-reference", default=False, show_default=True,
              help="Also time the reference torch trainer (one SAE) and compare whole grids.")
@click.option("--grid-steps", default=1000, show_default=True)
@click.option("--headroom", default=1.25, show_default=True,
              help="Sparse capacity per token = headroom x the batch's mean L0.")
@click.option("--parts", is_flag=True, help="Only the sparse step's pieces vs one dense product.")
def main(d, F, batch, l0s, grids, rounds, reference, grid_steps, headroom, parts):
    threads = os.cpu_count()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {threads} CPUs, load "
          f"{os.getloadavg()[0]:.1f}; ReLU {d} -> {F}, B={batch}, {rounds} interleaved rounds, "
          "medians")
    if parts:
        part_costs(d, F, batch, [float(v) for v in l0s.split(",")])
        return
    ref = reference_update(d, F, batch, threads) if reference else None
    if reference and ref is None:
        raise click.UsageError(f"--reference: no reference InterPLM at {REFERENCE}")
    startup = reference_startup(d, F) if ref else None
    x = tokens(d, batch)
    print(f"{'L0':>5} {'G':>3} {'capacity':>8} {'dense s':>9} {'sparse s':>9} {'dense/sparse':>13}"
          + ("  reference s (one SAE)" if ref else ""))
    for G in [int(g) for g in grids.split(",")]:
        for l0 in [float(v) for v in l0s.split(",")]:
            _, mean = relu_step(d, F, batch, 1, l0, "dense", 0, x)
            capacity = min(F, math.ceil(headroom * mean))
            dense, _ = relu_step(d, F, batch, G, l0, "dense", 0, x)
            sp, _ = relu_step(d, F, batch, G, l0, "sparse", capacity, x)
            fns = [dense, sp] + ([ref] if ref else [])
            times, outs = interleaved(fns, rounds)
            assert float(outs[1]["sparse"][0]) == 1.0, "the sparse step overflowed"
            l0_got = float(np.mean(outs[1]["l0"]))
            line = (f"{l0_got:>5.0f} {G:>3} {capacity:>8} {times[0]:>9.3f} {times[1]:>9.3f} "
                    f"{times[0] / times[1]:>12.2f}x")
            if ref:
                ours, theirs = grid_steps * times[1], G * (startup + grid_steps * times[2])
                dense_total = grid_steps * times[0]
                line += (f"  {times[2]:.3f}; grid of {G} x {grid_steps} steps: sparse {ours:.0f} s, "
                         f"dense {dense_total:.0f} s, reference's {G} runs {theirs:.0f} s "
                         f"(sparse {theirs / ours:.2f}x, dense {theirs / dense_total:.2f}x)")
            print(line, flush=True)
            del fns, dense, sp


if __name__ == "__main__":
    main()
