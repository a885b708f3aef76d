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

# Values every hyperparameter takes unless the grid or ``hparams`` says otherwise
# (the reference trainers' defaults).
HPARAM_DEFAULTS: dict[str, float] = {
    "lr": 1e-4,
    "seed": 0,
    "l1": 0.1,
    "k": 32,
    "auxk_alpha": 1 / 32,
    "threshold_beta": 0.999,
    "threshold_start_step": 1000,
    "sparsity_penalty": 1.0,
    "target_l0": 20.0,
    "bandwidth": 0.001,
}
INT_HPARAMS = ("seed", "k", "threshold_start_step")
SPARSE_DECODER_ARCHS = ("relu", "jumprelu", "topk")


@dataclass(frozen=True)
class TrainConfig:
    """Sweep training: one grid of SAEs per layer, trained together on the same batches."""

    store: str | None = option(None, "Activation store to train on (scripts: --store overrides).")
    out: str | None = option(None, "Output directory, one sweep per layer in <out>/layer_<L> (--out).")
    arch: Literal["relu", "topk", "batchtopk", "jumprelu"] = option(
        "relu", "SAE architecture (one per sweep).")
    layers: tuple[int, ...] = option((), "Layers of the store to train (one sweep each); empty: all.")
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
        None, "ReLU only: every this many steps, resample features dead for half as long.")
    grad_clip: float | None = option(1.0, "Global gradient-norm clip; null: no clipping.")
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
        "k <= F/32, for ReLU/JumpReLU when sparse_capacity <= F/16 and F >= 2,048. ReLU/JumpReLU "
        "steps where a token has more active features than sparse_capacity run dense.")
    sparse_capacity: int = option(
        0, "ReLU/JumpReLU sparse step: active features per token it holds; 0: F/32.")
    on_nan: Literal["mask", "stop"] = option(
        "mask", "A non-finite loss: `mask` freezes that SAE and goes on, `stop` ends the run.")

    def __post_init__(self):
        for name in ("steps", "batch_size", "log_every", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0; got {getattr(self, name)}")
        if self.d_sae < 0 or self.expansion <= 0:
            raise ValueError("d_sae must be >= 0 and expansion > 0")
        if self.grid and self.grid_list:
            raise ValueError("give either `grid` (a product) or `grid_list` (explicit rows), not both")
        if self.resample_steps is not None and self.arch != "relu":
            raise ValueError("resample_steps applies to the relu architecture only")
        if self.decoder == "sparse" and self.arch not in SPARSE_DECODER_ARCHS:
            raise ValueError(f"decoder: sparse applies to {', '.join(SPARSE_DECODER_ARCHS)}; "
                             f"{self.arch} decodes densely")
        if self.sparse_capacity < 0:
            raise ValueError(f"sparse_capacity must be >= 0; got {self.sparse_capacity}")
        if self.sparse_capacity and sae.get(self.arch).active_scores is None:
            raise ValueError(f"sparse_capacity applies to the relu and jumprelu architectures "
                             f"only, not {self.arch}")

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
        elif self.arch == "jumprelu":
            sparsity = 2000
        else:
            sparsity = int(self.steps * 0.05)
        return warmup, decay, sparsity


def build_grid(cfg: TrainConfig, where: str = "train") -> list[dict[str, Any]]:
    """Rows of the grid: one dict per SAE with id, arch and every hyperparameter it uses.

    ``grid`` (a product, keys in the order written) or ``grid_list`` (explicit rows); the other
    hyperparameters come from ``hparams`` or the defaults. Unknown names are refused.
    """
    arch = sae.get(cfg.arch)
    allowed = ("lr", "seed") + arch.hparams
    base = {name: HPARAM_DEFAULTS[name] for name in allowed}
    _check_names(cfg.hparams, allowed, f"{where}.hparams", cfg.arch)
    base.update(cfg.hparams)
    if cfg.grid_list:
        rows = []
        for i, row in enumerate(cfg.grid_list):
            if not isinstance(row, dict):
                raise InputError(f"{where}.grid_list[{i}]: expected a mapping, got {row!r}")
            _check_names(row, allowed, f"{where}.grid_list[{i}]", cfg.arch)
            rows.append({**base, **row})
    else:
        _check_names(cfg.grid, allowed, f"{where}.grid", cfg.arch)
        names = list(cfg.grid)
        values = []
        for name in names:
            v = cfg.grid[name]
            v = list(v) if isinstance(v, (list, tuple)) else [v]
            if not v:
                raise InputError(f"{where}.grid.{name}: empty list of values")
            values.append(v)
        rows = [{**base, **dict(zip(names, combo))} for combo in itertools.product(*values)]
    out = []
    for i, row in enumerate(rows):
        clean = {"id": f"sae{i:03d}", "arch": cfg.arch}
        for name in allowed:
            clean[name] = _number(row[name], name, f"{where} row {i}")
        out.append(clean)
    return out


def _check_names(mapping: dict, allowed: tuple[str, ...], where: str, arch: str) -> None:
    if not isinstance(mapping, dict):
        raise InputError(f"{where}: expected a mapping, got {mapping!r}")
    unknown = sorted(set(mapping) - set(allowed))
    if unknown:
        raise InputError(f"{where}: unknown hyperparameter(s) {unknown} for arch {arch!r}; "
                         f"known: {list(allowed)}")


def _number(value: Any, name: str, where: str) -> float | int:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{where}: {name}={value!r} is not a number") from None
    if not math.isfinite(x):
        raise InputError(f"{where}: {name}={value!r} is not finite")
    if name in INT_HPARAMS:
        if x != int(x):
            raise InputError(f"{where}: {name}={value!r} is not an integer")
        return int(x)
    if name in ("lr", "bandwidth", "target_l0") and x <= 0:
        raise InputError(f"{where}: {name}={value!r} must be > 0")
    return x


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

