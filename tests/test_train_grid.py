"""Building the grid from the `train:` config: product, explicit list, defaults, errors."""

from __future__ import annotations

import numpy as np
import pytest

from interplm_jax.config import from_dict
from interplm_jax.errors import InputError
from interplm_jax.train.config import TrainConfig, build_grid, grid_arrays


def test_product_in_written_order_with_fixed_values():
    cfg = from_dict(TrainConfig, {"grid": {"l1": [0.1, 0.2], "lr": ["1e-4", 1e-5]},
                                  "hparams": {"seed": 7}})
    rows = build_grid(cfg)
    assert [(r["l1"], r["lr"]) for r in rows] == [(0.1, 1e-4), (0.1, 1e-5), (0.2, 1e-4), (0.2, 1e-5)]
    assert {r["seed"] for r in rows} == {7} and [r["id"] for r in rows][-1] == "sae003"
    hp = grid_arrays(rows, ("lr", "seed", "l1"))
    assert hp["seed"].dtype == np.int32 and hp["lr"].dtype == np.float32 and hp["lr"].shape == (4,)


def test_explicit_list_and_architecture_defaults():
    cfg = TrainConfig(arch="topk", grid_list=({"k": 16}, {"k": 64, "lr": 3e-4}))
    rows = build_grid(cfg)
    assert [(r["k"], r["lr"]) for r in rows] == [(16, 1e-4), (64, 3e-4)]
    assert rows[0]["auxk_alpha"] == pytest.approx(1 / 32) and rows[0]["threshold_beta"] == 0.999
    assert "l1" not in rows[0]


@pytest.mark.parametrize("data, message", [
    ({"grid": {"l1": [0.1]}, "arch": "topk"}, r"unknown hyperparameter\(s\) \['l1'\] for arch 'topk'"),
    ({"grid": {"lr": []}}, "grid.lr: empty list"),
    ({"grid": {"lr": [0]}}, "lr=0 must be > 0"),
    ({"grid": {"seed": [1.5]}}, "seed=1.5 is not an integer"),
    ({"grid_list": [{"lr": "fast"}]}, "lr='fast' is not a number"),
    ({"grid": {"lr": [1e-3]}, "grid_list": [{"lr": 1e-3}]}, "either `grid`"),
    ({"arch": "gated"}, "'gated' is not one of"),
    ({"resample_steps": 10, "arch": "topk"}, "relu architecture only"),
])
def test_bad_grids_are_refused_by_name(data, message):
    with pytest.raises(InputError, match=message):
        build_grid(from_dict(TrainConfig, data, "cfg.yaml:train"))
