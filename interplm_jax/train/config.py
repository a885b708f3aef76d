"""The ``train:`` section of a config, and the grid of SAEs it describes."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from interplm_jax import sae
from interplm_jax.config import option
from interplm_jax.errors import InputError
from interplm_jax.sae._spec import INT32_MAX, check_number
from interplm_jax.train.schedules import lr_factor, sparsity_factor

#: Hyperparameter -> its value unless the grid or ``hparams`` says otherwise, over every
#: architecture (each written once, in its architecture's spec: ``interplm_jax.sae``).
HPARAM_DEFAULTS: dict[str, float] = {
    h.name: h.default for arch in sae.ARCHITECTURES.values() for h in arch.all_hparams}
INT_HPARAMS = tuple(sorted({h.name for arch in sae.ARCHITECTURES.values()
                            for h in arch.all_hparams if h.integer}))
ArchName = Literal[sae.TRAINABLE_ARCHS]
"""The architectures the trainer trains (from the registry)."""


@dataclass(frozen=True)
class TrainConfig:
    """Sweep training: one grid of SAEs per layer, trained together on the same batches."""

    store: str | None = option(None, "Activation store to train on (scripts: --store overrides).")
    out: str | None = option(None, "Output directory, one sweep per layer in <out>/layer_<L> (--out).")
    arch: ArchName = option("relu", "SAE architecture (one per sweep).")
    layers: tuple[int, ...] = option((), "Layers of the store to train (one sweep each); empty: all.")
    layers_together: Literal["auto", "on", "off"] = option(
        "off", "Several layers: train their grids in one loop, each batch read once for all "
        "(`auto`: in the fewest groups that fit memory_budget_gb; `on`: all in one group; "
        "`off`: one layer after the other). The sweep directories are the same either way.")
    memory_budget_gb: float = option(
        0.0, "GiB per device layers trained together may use (their train states and one grid "
        "step, by XLA's estimate); "
        "0: the device's memory, on the CPU half the machine's.")
    expansion: int = option(32, "Dictionary size as a multiple of d_model (when d_sae is 0).")
    d_sae: int = option(0, "Dictionary size F; 0 means expansion * d_model.")
    steps: int = option(500_000, "Training steps (batches) per SAE.")
    batch_size: int = option(2048, "Tokens per batch (global, over all hosts).")
    warmup_steps: float | None = option(
        None, "LR warmup steps; default 5% of steps (the reference's steps * 0.05).")
    decay_start: int | None = option(
        None, "Step where the LR starts its linear decay to 0; default steps // 2; < 0: no decay.")
    sparsity_warmup_steps: int | None = option(
        None, "Steps of the L1/sparsity warmup; default int(5% of steps) (JumpReLU: 2000); 0: none.")
    resample_steps: int | None = option(
        None, "ReLU only: every this many steps (> 0), resample features dead for half as long.")
    grad_clip: float | None = option(1.0, "Global gradient-norm clip (> 0); null: no clipping.")
    dead_tokens: int = option(
        10_000_000, "A feature is dead after this many tokens without firing (metrics, AuxK).")
    grid: dict = option(
        default_factory=dict, help="Hyperparameter -> list of values; the grid is their product.")
    grid_list: tuple[dict, ...] = option(
        (), "Explicit grid: a list of {hyperparameter: value} rows (instead of `grid`).")
    hparams: dict = option(
        default_factory=dict, help="Fixed values of hyperparameters that the grid does not vary.")
    seed: int = option(0, "Seed of the token stream's shuffling.")
    log_every: int = option(100, "Fetch metrics to metrics.jsonl every this many steps.")
    checkpoint_every: int = option(5000, "Checkpoint every this many steps (and at the end).")
    keep_checkpoints: int = option(3, "Checkpoints kept (the newest ones; the final one included).")
    mesh_sae: int = option(0, "Devices on the mesh's `sae` axis; 0: automatic.")
    mesh_data: int = option(0, "Devices on the mesh's `data` axis; 0: automatic.")
    matmul_dtype: Literal["float32", "bfloat16"] = option(
        "float32", "Matmul input dtype (bfloat16: float32 parameters and accumulation).")
    decoder: Literal["auto", "dense", "sparse"] = option(
        "auto", "TopK, ReLU, JumpReLU: `sparse` gathers each token's active decoder rows (and "
        "scatter-adds the gradients), `dense` multiplies f W_dec; `auto`: sparse for TopK when "
        "k <= F/32, and for ReLU/JumpReLU when F >= 4096. A sparse ReLU/JumpReLU step whose "
        "batch holds more active entries than sparse_capacity per token runs dense.")
    sparse_capacity: int = option(
        0, "ReLU/JumpReLU sparse step: active entries per token (on average over the batch) it "
        "holds; 0: 64 x F / 10240.")
    on_nan: Literal["mask", "stop"] = option(
        "mask", "A non-finite loss: `mask` freezes that SAE and goes on, `stop` ends the run.")
    input_center: bool = option(
        False, "Subtract the store's per-dimension mean (its statistics) from every input; "
        "folded into the saved SAEs (b_pre' = b_pre + mean), which take raw activations.")
    input_scale: Literal["none", "sqrt_d"] = option(
        "none", "`sqrt_d`: multiply inputs by one constant making the RMS token norm sqrt(d_model) "
        "(after centring); folded into the saved SAEs.")
    preflight: Literal["warn", "error", "off"] = option(
        "warn", "Checks before each layer's sweep (store statistics + a dry run of the grid): "
        "log warnings, stop on any (`error`), or skip (`off`).")
    preflight_steps: int = option(200, "Steps of the preflight dry run (0: statistics checks only).")
    preflight_max_dead: float = option(
        0.9, "Preflight: warn when an SAE has more than this fraction of features dead after the dry run.")
    preflight_max_mean_ratio: float = option(
        0.5, "Preflight: warn when ||mean|| / mean token norm exceeds this and inputs are not centred.")

    def __post_init__(self):
        """Check every option (and the grid) before anything is written."""
        for name in ("steps", "batch_size", "log_every", "checkpoint_every", "keep_checkpoints",
                     "dead_tokens", "expansion"):
            _require(getattr(self, name) > 0, name, getattr(self, name), "> 0")
        for name in ("d_sae", "seed", "mesh_sae", "mesh_data", "preflight_steps"):
            _require(getattr(self, name) >= 0, name, getattr(self, name), ">= 0")
        # the step counter and the stream seed are int32 on the device
        _require(self.steps <= INT32_MAX, "steps", self.steps, f"<= {INT32_MAX} (int32 steps)")
        _require(self.seed <= INT32_MAX, "seed", self.seed, f"<= {INT32_MAX}")
        _require(self.grad_clip is None or (math.isfinite(self.grad_clip) and self.grad_clip > 0),
                 "grad_clip", self.grad_clip, "> 0, or null for no clipping")
        _require(self.memory_budget_gb >= 0, "memory_budget_gb", self.memory_budget_gb, ">= 0")
        _require(0 <= self.preflight_max_dead <= 1, "preflight_max_dead", self.preflight_max_dead,
                 "in [0, 1]")
        _require(self.preflight_max_mean_ratio > 0, "preflight_max_mean_ratio",
                 self.preflight_max_mean_ratio, "> 0")
        if self.grid and self.grid_list:
            raise ValueError("give either `grid` (a product) or `grid_list` (explicit rows), not both")
        if self.resample_steps is not None:
            if not sae.get(self.arch).resamples:
                which = " / ".join(a for a in sae.TRAINABLE_ARCHS if sae.get(a).resamples)
                raise ValueError(f"resample_steps applies to the {which} architecture only")
            _require(self.resample_steps > 0, "resample_steps", self.resample_steps,
                     "> 0, or null for no resampling")
        warmup, decay, sparsity = self.schedule_steps()
        lr_factor(self.steps, warmup, decay)  # each raises ValueError naming the bad option
        sparsity_factor(sparsity)
        build_grid(self, where="", F=self.d_sae or None)
        arch = sae.get(self.arch)
        if self.decoder == "sparse" and not arch.sparse_decoder:
            which = ", ".join(a for a in sae.TRAINABLE_ARCHS if sae.get(a).sparse_decoder)
            raise ValueError(f"decoder: sparse applies to {which}; {self.arch} decodes densely")
        _require(self.sparse_capacity >= 0, "sparse_capacity", self.sparse_capacity, ">= 0")
        if self.sparse_capacity and arch.active_mask is None:
            which = " and ".join(a for a in sae.TRAINABLE_ARCHS if sae.get(a).active_mask)
            raise ValueError(f"sparse_capacity applies to the {which} architectures only, "
                             f"not {self.arch}")

    def dict_size(self, d_model: int) -> int:
        """F for inputs of width d_model."""
        return self.d_sae or self.expansion * d_model

    def schedule_steps(self) -> tuple[float, int | None, int]:
        """(warmup_steps, decay_start or None, sparsity_warmup_steps) with defaults resolved."""
        warmup = self.steps * 0.05 if self.warmup_steps is None else self.warmup_steps
        if self.decay_start is None:
            decay = self.steps // 2
        else:
            decay = None if self.decay_start < 0 else self.decay_start
        if self.sparsity_warmup_steps is not None:
            sparsity = self.sparsity_warmup_steps
        elif sae.get(self.arch).sparsity_warmup_steps is not None:
            sparsity = sae.get(self.arch).sparsity_warmup_steps
        else:
            sparsity = int(self.steps * 0.05)
        return warmup, decay, sparsity


def _require(ok: bool, name: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ValueError(f"{name}={value!r}: must be {allowed}")


def build_grid(cfg: TrainConfig, where: str = "train", F: int | None = None) -> list[dict[str, Any]]:
    """Rows of the grid: one dict per SAE with id, arch and every hyperparameter it uses.

    ``grid`` (a product, keys in the order written) or ``grid_list`` (explicit rows); the other
    hyperparameters come from ``hparams`` or the architecture's defaults. Unknown names and
    values outside a hyperparameter's range (``F``: the dictionary size, when known, bounds
    TopK's k) are refused, named where they are written.
    """
    arch = sae.get(cfg.arch)
    spec = {h.name: h for h in arch.all_hparams}

    def at(key: str) -> str:
        return f"{where}.{key}" if where else key

    def known(mapping: dict, key: str) -> dict:
        if not isinstance(mapping, dict):
            raise InputError(f"{at(key)}: expected a mapping, got {mapping!r}")
        unknown = sorted(set(mapping) - set(spec))
        if unknown:
            raise InputError(f"{at(key)}: unknown hyperparameter(s) {unknown} for arch "
                             f"{cfg.arch!r}; known: {list(spec)}")
        return mapping

    def checked(mapping: dict, key: str) -> dict:
        return {n: check_number(spec[n], v, at(key), F) for n, v in known(mapping, key).items()}

    base = {h.name: h.default for h in arch.all_hparams}
    base.update(checked(cfg.hparams, "hparams"))
    if cfg.grid_list:
        rows = [{**base, **checked(row, f"grid_list[{i}]")} for i, row in enumerate(cfg.grid_list)]
    else:
        values = []
        for name, v in known(cfg.grid, "grid").items():
            v = list(v) if isinstance(v, (list, tuple)) else [v]
            if not v:
                raise InputError(f"{at('grid')}.{name}: empty list of values")
            values.append([checked({name: x}, f"grid.{name}[{j}]")[name] for j, x in enumerate(v)])
        rows = [{**base, **dict(zip(cfg.grid, combo))} for combo in itertools.product(*values)]
    return [{"id": f"sae{i:03d}", "arch": cfg.arch, **{n: row[n] for n in spec}}
            for i, row in enumerate(rows)]


def grid_arrays(rows: list[dict[str, Any]], names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Hyperparameter name -> (G,) array (int32 for integer ones, float32 otherwise)."""
    return {
        n: np.asarray([r[n] for r in rows], np.int32 if n in INT_HPARAMS else np.float32)
        for n in names
    }


def resolved(cfg: TrainConfig) -> dict[str, Any]:
    """The config with schedule defaults filled in (written as the sweep's config.yaml)."""
    from interplm_jax.config import to_dict

    warmup, decay, sparsity = cfg.schedule_steps()
    out = to_dict(cfg)
    out.update(warmup_steps=warmup, decay_start=-1 if decay is None else decay,
               sparsity_warmup_steps=sparsity)
    return out

