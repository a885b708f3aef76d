#!/usr/bin/env python
"""Sweep-trainer speed: the vmapped grid step vs its bare matmuls and vs the reference trainer.

Prints, for each grid size G (same shapes, same machine, same run):
  * step time of the compiled grid step, and its ratio to the five bare einsums the step must do
    (encode, decode, and the three gradient matmuls) timed alone for the same G: once as one
    jitted function (XLA picks layouts, and may add transposes), once as five separate jitted
    plain products on pre-transposed operands (no copies: the strictest baseline);
  * tokens/s per SAE, and the ratio to the reference torch ReLU trainer's one SAE
    (``../shared/reference/InterPLM``, when present) at the same thread count;
  * a whole grid for ``--grid-steps`` steps vs the reference's G sequential runs (each pays the
    measured process start-up plus its steps), as wall clock;
  * memory per SAE (parameters + Adam state + the step's temporaries, from XLA's memory
    analysis) and the largest grid of a given shape that fits a memory budget.

    python benchmarks/train_step.py                      # 320 -> 10,240, batch 2,048, G = 1, 4, 20
    python benchmarks/train_step.py --d 32 --F 256 --batch 256 --grids 4   # a quick look
    python benchmarks/train_step.py --device-report      # on a GPU/TPU: tokens/s, FLOP/s vs peak

``--device-report`` (one command, a few minutes on an accelerator): for G = 1, 20 and 120 (as many
SAEs as the paper's 6 layers x 20 of ESM-2 8M, as one grid) and float32 / bfloat16 matmuls, the ReLU
grid step's tokens/s per SAE and its achieved FLOP/s (the five products, 10 B d F per SAE)
against the chip's peak (a table of public dense peaks by device kind); a grid that does not fit
the device's memory is reported as such.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import click
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO  # noqa: E402

from interplm_jax.train.config import TrainConfig, build_grid, grid_arrays  # noqa: E402
from interplm_jax.train.step import init_state, make_step  # noqa: E402
from interplm_jax.train.sweep import make_spec  # noqa: E402

REFERENCE = REPO.parent / "shared" / "reference" / "InterPLM"


def grid_step(d: int, F: int, B: int, G: int, arch: str = "relu", matmul_dtype: str = "float32",
              decoder: str = "dense", abstract: bool = False):
    """(compiled step, state, hparams, x) for a grid of G SAEs (``train.decoder`` dense: the
    step these figures are about; ``benchmarks/sparse_relu.py`` times the sparse one).
    ``abstract``: state and x as shapes only (to compile, without allocating the grid)."""
    cfg = TrainConfig(arch=arch, steps=1000, batch_size=B, d_sae=F, matmul_dtype=matmul_dtype,
                      decoder=decoder, grid={"lr": list(np.geomspace(1e-4, 1e-3, G))})
    grid = build_grid(cfg)
    spec = make_spec(cfg, grid)
    hp = jax.device_put(grid_arrays(grid, ("lr", "seed") + spec.arch.hparams))
    def make(h):
        return init_state(spec, d, F, h)

    state = jax.eval_shape(make, hp) if abstract else jax.jit(make)(hp)
    x = (jax.ShapeDtypeStruct((B, d), jnp.float32) if abstract
         else jax.random.normal(jax.random.key(0), (B, d), jnp.float32))
    step = jax.jit(make_step(spec), donate_argnums=0)
    return step, state, hp, x


def bare_matmuls(d: int, F: int, B: int, G: int):
    """The five einsums of a ReLU SAE step for G SAEs, jitted alone."""

    @jax.jit
    def five(x, w_enc, w_dec, dxh):
        pre = jnp.einsum("bd,gdf->gbf", x, w_enc)           # encode
        xh = jnp.einsum("gbf,gfd->gbd", pre, w_dec)         # decode
        d_wdec = jnp.einsum("gbf,gbd->gfd", pre, dxh)       # dL/dW_dec
        dpre = jnp.einsum("gbd,gfd->gbf", dxh, w_dec)       # dL/df
        d_wenc = jnp.einsum("bd,gbf->gdf", x, dpre)         # dL/dW_enc
        return xh, d_wdec, d_wenc

    k = jax.random.split(jax.random.key(1), 4)
    args = (jax.random.normal(k[0], (B, d)), jax.random.normal(k[1], (G, d, F)),
            jax.random.normal(k[2], (G, F, d)), jax.random.normal(k[3], (G, B, d)))
    return five, args


def separate_matmuls(d: int, F: int, B: int, G: int):
    """The same five matmuls, each its own jitted function on operands already laid out as a
    plain row-major (m, k) @ (k, n) product wants them (transposes precomputed), so that XLA
    emits one dot each and no layout copy: the strictest baseline. Returns (run, HLO copies)."""
    k = jax.random.split(jax.random.key(2), 9)
    n = lambda i, shape: jax.random.normal(k[i], shape)  # noqa: E731
    mm = jax.jit(lambda a, b: jnp.einsum("gmk,gkn->gmn", a, b))
    calls = [  # (x is given per SAE: with one shared x XLA transposes operands and result)
        (mm, n(0, (G, B, d)), n(1, (G, d, F))),       # encode:    x (B,d) @ W_enc (d,F)
        (mm, n(2, (G, B, F)), n(3, (G, F, d))),       # decode:    f (B,F) @ W_dec (F,d)
        (mm, n(4, (G, F, B)), n(5, (G, B, d))),       # dW_dec:    f^T (F,B) @ r (B,d)
        (mm, n(6, (G, B, d)), n(7, (G, d, F))),       # dL/df:     r (B,d) @ W_dec^T (d,F)
        (mm, n(8, (G, d, B)), n(2, (G, B, F))),       # dW_enc:    x^T (d,B) @ dpre (B,F)
    ]
    copies = sum(f.lower(a, b).compile().as_text().count(" copy(") for f, a, b in calls)

    def run():
        jax.block_until_ready([f(a, b) for f, a, b in calls])

    run()
    return run, copies


def interleaved(fns: dict, repeats: int) -> dict[str, tuple[float, float]]:
    """name -> (median, min) seconds; the functions run in turn, round after round, so that
    drifting load on a shared machine hits them alike."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: (float(np.median(v)), float(np.min(v))) for k, v in times.items()}


class Stepper:
    """Runs the donated grid step repeatedly, keeping the state."""

    def __init__(self, step, state, hp, x):
        self.step, self.state, self.hp, self.x = step, state, hp, x
        self()  # compile + warm up

    def __call__(self):
        self.state, m = self.step(self.state, self.hp, self.x)
        jax.block_until_ready(m)


def reference_update(d: int, F: int, B: int, threads: int):
    """A callable doing one ``ReLUTrainer.update`` of the reference (None when absent)."""
    if not (REFERENCE / "interplm").is_dir():
        return None
    sys.path.insert(0, str(REFERENCE))
    import torch
    from interplm.train.trainers.relu import ReLUTrainer, ReLUTrainerConfig

    torch.set_num_threads(threads)
    trainer = ReLUTrainer(ReLUTrainerConfig(activation_dim=d, dictionary_size=F, lr=1e-4,
                                            steps=1000, warmup_steps=50, decay_start=500,
                                            l1_penalty=0.1))
    x = torch.randn(B, d)
    trainer.update(100, x)
    counter = iter(range(101, 10**6))
    return lambda: trainer.update(next(counter), x)


def reference_startup(d: int, F: int) -> float | None:
    """Seconds for a fresh process to import the reference and build its ReLU trainer."""
    if not (REFERENCE / "interplm").is_dir():
        return None
    code = (f"import sys; sys.path[:0] = [{str(REFERENCE)!r}]\n"
            "from interplm.train.trainers.relu import ReLUTrainer, ReLUTrainerConfig\n"
            f"ReLUTrainer(ReLUTrainerConfig(activation_dim={d}, dictionary_size={F}, lr=1e-4, "
            "steps=1000, warmup_steps=50, decay_start=500, l1_penalty=0.1))\n")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - t0


def memory_per_sae(step, state, hp, x, G: int) -> dict[str, float]:
    """Bytes per SAE: arguments (params + Adam + counters) and XLA's temporaries of the step."""
    analysis = step.lower(state, hp, x).compile().memory_analysis()
    state_bytes = sum(a.size * a.dtype.itemsize for a in jax.tree.leaves(state))
    return {"state": state_bytes / G, "temp": analysis.temp_size_in_bytes / G}


#: Dense matmul peaks (FLOP/s per chip) by device kind: (float32 as XLA runs it by default, bf16).
#: GPUs run float32 matmuls as TF32 by default; TPUs as one bf16 pass.
PEAKS = {
    "H100": (494e12, 989e12), "H200": (494e12, 989e12), "A100": (156e12, 312e12),
    "L4": (60e12, 121e12), "TPU v4": (275e12, 275e12), "TPU v5 lite": (197e12, 197e12),
    "TPU v5": (459e12, 459e12), "TPU v6 lite": (918e12, 918e12),
}


def chip_peak(kind: str, dtype: str) -> float | None:
    """The peak of the first PEAKS key the device kind contains (longest first), or None."""
    for key in sorted(PEAKS, key=len, reverse=True):
        if key in kind:
            return PEAKS[key][dtype == "bfloat16"]
    return None


def run_device_report(d: int, F: int, batch: int, grids: tuple[int, ...], steps: int) -> None:
    """Tokens/s per SAE and achieved FLOP/s vs peak of the ReLU grid step, f32 and bf16."""
    dev = jax.devices()[0]
    print(f"device report: {dev.device_kind} ({dev.platform}) x{jax.device_count()}, jax "
          f"{jax.__version__}; ReLU SAE {d} -> {F}, batch {batch}, median of {steps} steps")
    print(f"{'G':>4} {'matmuls':>9} {'step ms':>9} {'tokens/s/SAE':>13} {'TFLOP/s':>8} "
          f"{'of peak':>8}")
    for G in grids:
        for dtype in ("float32", "bfloat16"):
            try:
                run = Stepper(*grid_step(d, F, batch, G, matmul_dtype=dtype))
                times = []
                for _ in range(steps):
                    t0 = time.perf_counter()
                    run()
                    times.append(time.perf_counter() - t0)
            except jax.errors.JaxRuntimeError as e:  # RESOURCE_EXHAUSTED: the grid does not fit
                print(f"{G:>4} {dtype:>9}  does not fit: {str(e).splitlines()[0][:100]}")
                continue
            t = float(np.median(times))
            flops = 10 * batch * d * F * G / t
            peak = chip_peak(dev.device_kind, dtype)
            share = f"{flops / peak:>7.0%}" if peak else "    n/a"
            print(f"{G:>4} {dtype:>9} {t * 1e3:>9.1f} {batch / t:>13,.0f} {flops / 1e12:>8.3g} "
                  f"{share}", flush=True)
            del run


@click.command()
@click.option("--d", default=320, help="Input width.")
@click.option("--F", "F", default=10240, help="Dictionary size.")
@click.option("--batch", default=2048, help="Tokens per batch.")
@click.option("--grids", default="1,4,20", help="Grid sizes G to time.")
@click.option("--repeats", default=3, help="Timed steps per measurement (median).")
@click.option("--grid-steps", default=1000, help="Steps of the whole-grid wall-clock comparison.")
@click.option("--matmul-dtype", type=click.Choice(["float32", "bfloat16"]), default="float32")
@click.option("--budget-gb", default=80.0, help="Memory budget for the largest-grid estimate.")
@click.option("--big-shape", default="1280,10240", help="d,F of the largest-grid estimate (650M).")
@click.option("--reference/--no-reference", default=True, help="Time the reference torch trainer.")
@click.option("--memory-only", is_flag=True, help="Only XLA's memory analysis (compile, no steps).")
@click.option("--decoder", type=click.Choice(["dense", "auto", "sparse"]), default="dense",
              help="train.decoder of the step (auto/sparse: ReLU's sparse branch compiled too).")
@click.option("--device-report", is_flag=True,
              help="Tokens/s and FLOP/s vs peak for G = 1, 20, 120, f32 and bf16 (accelerators).")
def main(d, F, batch, grids, repeats, grid_steps, matmul_dtype, budget_gb, big_shape, reference,
         memory_only, decoder, device_report):
    if device_report:
        sizes = (1, 20, 120) if grids == "1,4,20" else tuple(int(g) for g in grids.split(","))
        run_device_report(d, F, batch, sizes, max(repeats, 5))
        return
    threads = os.cpu_count()
    print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}, {threads} CPU threads; "
          f"SAE {d} -> {F}, batch {batch}, matmuls {matmul_dtype}, decoder {decoder}")
    reference = reference and not memory_only
    ref_update = reference_update(d, F, batch, threads) if reference else None
    if reference and ref_update is None:
        print(f"(no reference InterPLM at {REFERENCE}: its columns are left out)", flush=True)
    startup = reference_startup(d, F) if ref_update else None
    if startup is not None:
        print(f"reference process start-up (import + build trainer): {startup:.1f} s")
    for G in [int(g) for g in grids.split(",")]:
        step, state, hp, x = grid_step(d, F, batch, G, matmul_dtype=matmul_dtype, decoder=decoder,
                                       abstract=memory_only)
        mem = memory_per_sae(step, state, hp, x, G)
        if memory_only:
            per = mem["state"] + mem["temp"]
            print(f"G={G:3d}: per SAE: state {mem['state'] / 2**20:.1f} MiB + step temporaries "
                  f"{mem['temp'] / 2**20:.1f} MiB -> about {int(budget_gb * 1e9 // per)} SAEs "
                  f"in {budget_gb:.0f} GB; the grid on one device: {G * per / 2**30:.2f} GiB "
                  f"(state {G * mem['state'] / 2**30:.2f} GiB incl. Adam's two moments)")
            continue
        five, args = bare_matmuls(d, F, batch, G)
        jax.block_until_ready(five(*args))
        strict, copies = separate_matmuls(d, F, batch, G)
        fns = {"step": Stepper(step, state, hp, x),
               "matmuls": lambda: jax.block_until_ready(five(*args)),
               "separate": strict}
        if ref_update is not None:
            fns["reference"] = ref_update
        del state
        res = interleaved(fns, repeats)
        print(f"G={G:3d} (median / min of {repeats}): step {res['step'][0] * 1e3:.0f} / "
              f"{res['step'][1] * 1e3:.0f} ms, bare matmuls {res['matmuls'][0] * 1e3:.0f} / "
              f"{res['matmuls'][1] * 1e3:.0f} ms" + (
                  f", reference one SAE {res['reference'][0] * 1e3:.0f} / "
                  f"{res['reference'][1] * 1e3:.0f} ms" if ref_update else ""))
        t, t_mm, t_sep = res["step"][0], res["matmuls"][0], res["separate"][0]
        print(f"        five matmuls each alone ({copies} layout copies): {t_sep * 1e3:.0f} / "
              f"{res['separate'][1] * 1e3:.0f} ms; step/those {t / t_sep:.2f}x (median), "
              f"{res['step'][1] / res['separate'][1]:.2f}x (min)")
        ref_t = res["reference"][0] if ref_update else None
        flops = 6 * batch * d * F * G
        line = (f"G={G:3d}: step {t * 1e3:8.1f} ms, bare matmuls {t_mm * 1e3:8.1f} ms "
                f"(step/matmuls {t / t_mm:.2f}x, {flops / t / 1e9:.0f} GFLOP/s); "
                f"{batch * G / t:,.0f} tokens/s in all, {batch / t:,.0f} per SAE")
        if ref_t is not None:
            ours = grid_steps * t
            theirs = G * (startup + grid_steps * ref_t)
            line += (f"; per-SAE vs reference {ref_t * G / t:.2f}x; grid of {G} for {grid_steps} "
                     f"steps {ours:.0f} s vs reference's {G} runs {theirs:.0f} s "
                     f"({theirs / ours:.2f}x)")
        print(line)
        if ref_t is not None:
            best = min(t_mm, t_sep)
            print(f"        ceiling: the bare matmuls run {flops / best / 1e9:.0f} GFLOP/s, the reference "
                  f"{flops / G / ref_t / 1e9:.0f} GFLOP/s; a trainer doing only these matmuls could be "
                  f"at most {ref_t * G / best:.2f}x the reference per SAE, and its grid of {G} for "
                  f"{grid_steps} steps at most "
                  f"{G * (startup + grid_steps * ref_t) / (grid_steps * best):.2f}x the {G} runs")
        print(f"        memory per SAE: state {mem['state'] / 2**20:.1f} MiB, step temporaries "
              f"{mem['temp'] / 2**20:.1f} MiB")
        del fns, step
    bd, bF = (int(v) for v in big_shape.split(","))
    state_per = 4 * (2 * bd * bF * 3 + 4 * bF + 3 * bd)   # params, Adam mu, nu (+ small leaves)
    temp_per = 4 * batch * bF * 4                           # ~four (B, F) float32 buffers live
    fit = int(budget_gb * 1e9 // (state_per + temp_per))
    print(f"shape {bd} -> {bF}, batch {batch}: ~{state_per / 2**20:.0f} MiB state + "
          f"~{temp_per / 2**20:.0f} MiB step temporaries per SAE -> about {fit} SAEs in "
          f"{budget_gb:.0f} GB (estimate; see the measured temporaries above)")


if __name__ == "__main__":
    main()
