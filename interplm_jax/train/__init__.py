"""Sweep trainer: a grid of SAEs trained together in one jit-compiled, vmapped, sharded step.

Public entry points: :class:`TrainConfig` (the ``train:`` config section), :func:`build_grid`,
:func:`train_sweep` (one layer's grid, with its sweep directory) and the optax pieces in
:mod:`interplm_jax.train.transforms` and :mod:`interplm_jax.train.schedules`.
"""

from interplm_jax.train.config import TrainConfig, build_grid
from interplm_jax.train.sweep import SweepResult, TrainingError, train_sweep

__all__ = ["SweepResult", "TrainConfig", "TrainingError", "build_grid", "train_sweep"]
