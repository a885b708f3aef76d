#!/usr/bin/env python
"""Stream throughput vs the consumption of a 320 -> 10,240 ReLU SAE training step.

The stream must deliver tokens > 10x faster than one SAE step consumes them, so that it is never
the bottleneck. Also the cost of the stores' per-chunk CRC-32C checksums: reading every row of
the same store written with and without them (fresh reader each time, medians, interleaved). The store holds random d=320 activations with a realistic protein length mix;
the stream time includes reading, the within-shard shuffle, and ``jax.device_put`` of each batch.
The step is a jitted forward + backward + Adam update of one ReLU SAE on a batch of 2,048 tokens.

    python benchmarks/stream.py [--proteins 900] [--shard-size 300]
"""

from __future__ import annotations

import statistics
import tempfile
import time

import click
import jax
import jax.numpy as jnp
import numpy as np
import optax

from _common import real_proteins
from interplm_jax.data import TokenStream
from interplm_jax.store import ActivationStore, write_store


def read_all(path: str) -> int:
    """Open the store afresh (empty chunk cache) and read every row; return the rows read."""
    store = ActivationStore.open(path)
    for a in range(0, store.n_tokens, 1 << 16):
        store.rows(1, a, min(a + (1 << 16), store.n_tokens))
    return store.n_tokens


def checksum_cost(ids, acts, shard_size: int, tmp: str, rounds: int = 5) -> tuple[float, float]:
    """Median seconds to read a store with and without per-chunk checksums."""
    for name, checked in (("crc", True), ("plain", False)):
        write_store(f"{tmp}/{name}", ids, {1: acts}, shard_size=shard_size, chunk_checksums=checked)
    times = {"crc": [], "plain": []}
    for _ in range(rounds):
        for name in times:
            t0 = time.perf_counter()
            read_all(f"{tmp}/{name}")
            times[name].append(time.perf_counter() - t0)
    return statistics.median(times["crc"]), statistics.median(times["plain"])


def sae_step_fn(d: int, F: int, batch: int):
    """A jitted ReLU SAE step (L2-norm reconstruction + L1), and its initial state."""
    k = jax.random.split(jax.random.key(0), 2)
    params = {"b_pre": jnp.zeros(d), "W_enc": jax.random.normal(k[0], (d, F)) * 0.01,
              "b_enc": jnp.zeros(F), "W_dec": jax.random.normal(k[1], (F, d)) * 0.01}
    opt = optax.adam(1e-4)

    def loss(p, x):
        f = jax.nn.relu((x - p["b_pre"]) @ p["W_enc"] + p["b_enc"])
        x_hat = f @ p["W_dec"] + p["b_pre"]
        return jnp.linalg.norm(x - x_hat, axis=-1).mean() + 0.1 * jnp.abs(f).sum(-1).mean()

    @jax.jit
    def step(p, s, x):
        g = jax.grad(loss)(p, x)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s

    return step, params, opt.init(params)


@click.command()
@click.option("--proteins", default=900, show_default=True)
@click.option("--shard-size", default=300, show_default=True)
@click.option("--d", default=320, show_default=True)
@click.option("--features", default=10240, show_default=True)
@click.option("--batch", default=2048, show_default=True)
def main(proteins, shard_size, d, features, batch):
    prots, source = real_proteins(proteins)
    rng = np.random.default_rng(0)
    acts = [rng.standard_normal((len(p.sequence), d), dtype=np.float32) for p in prots]
    with tempfile.TemporaryDirectory() as tmp:
        t_crc, t_plain = checksum_cost([p.id for p in prots], acts, shard_size, tmp)
        store = write_store(f"{tmp}/store", [p.id for p in prots], {1: acts}, shard_size=shard_size)
        del acts
        stream = TokenStream(store, 1, batch_size=batch, seed=0)
        n_batches = 2 * stream.batches_per_epoch()  # two epochs: every shard load counted twice
        t0 = time.perf_counter()
        for b in zip(range(n_batches), stream):
            jax.device_put(b[1]).block_until_ready()
        t_stream = time.perf_counter() - t0
    step, params, state = sae_step_fn(d, features, batch)
    x = jnp.asarray(np.random.default_rng(1).standard_normal((batch, d), dtype=np.float32))
    params, state = step(params, state, x)
    jax.block_until_ready(params)
    times = []
    for _ in range(7):
        t0 = time.perf_counter()
        params, state = step(params, state, x)
        jax.block_until_ready(params)
        times.append(time.perf_counter() - t0)
    t_step = statistics.median(times)
    stream_rate, step_rate = n_batches * batch / t_stream, batch / t_step
    print(f"store: {proteins} proteins from {source}, {store.n_tokens} tokens, d={d}, "
          f"{store.n_shards} shards of {shard_size}; device {jax.devices()[0].platform}")
    print(f"stream: {n_batches} batches of {batch} in {t_stream:.2f}s -> {stream_rate:,.0f} tokens/s")
    print(f"SAE step {d}->{features}, batch {batch}: median {t_step * 1e3:.1f} ms -> {step_rate:,.0f} tokens/s")
    print(f"stream / step: {stream_rate / step_rate:.1f}x (target > 10x)")
    print(f"read every row: {t_crc * 1e3:.0f} ms with chunk checksums, {t_plain * 1e3:.0f} ms without "
          f"(medians) -> checksums cost {t_crc / t_plain:.2f}x")


if __name__ == "__main__":
    main()
