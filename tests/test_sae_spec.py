"""The architecture specs: leaves from init, one default per hyperparameter, torch tables whole."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from interplm_jax import sae, sae_dir
from interplm_jax.errors import InputError
from interplm_jax.sae import HParam
from interplm_jax.sae._spec import check_number
from interplm_jax.train.config import HPARAM_DEFAULTS, TrainConfig, build_grid

D, F = 8, 24


@pytest.mark.parametrize("name", sorted(sae.ARCHITECTURES))
def test_leaf_shapes_and_dtypes_are_those_init_makes(name):
    arch = sae.get(name)
    F_ = D if arch.square else F
    params = arch.init(jax.random.key(0), D, F_)
    sizes = {"d": D, "F": F_}
    dims = arch.leaf_dims()
    assert set(dims) == set(params)
    for leaf, value in params.items():
        assert value.shape == tuple(sizes[s] for s in dims[leaf]), leaf
        want = np.int32 if leaf in arch.int_leaves() else np.float32
        assert value.dtype == want, leaf
    assert sae_dir.SHAPES[name] == dims


def test_shapes_table_as_the_design_writes_it():
    """DESIGN.md section 2 and the sae package docstring, written out by hand."""
    relu = {"b_pre": ("d",), "W_enc": ("d", "F"), "b_enc": ("F",), "W_dec": ("F", "d"), "scale": ("F",)}
    assert sae_dir.SHAPES["relu"] == relu
    assert sae_dir.SHAPES["topk"] == sae_dir.SHAPES["batchtopk"] == {**relu, "k": (), "threshold": ()}
    jump = {k: v for k, v in relu.items() if k != "b_pre"}
    assert sae_dir.SHAPES["jumprelu"] == {**jump, "b_dec": ("d",), "threshold": ("F",)}
    assert sae_dir.SHAPES["neuron"] == {k: tuple("d" for _ in v) for k, v in relu.items()}
    assert sae_dir.INT_LEAVES == ("k",)


def test_one_default_per_hyperparameter():
    """TopK's init and the train config agree on k (the reference trainers' 10), and every name
    shared by two architectures has one default."""
    for name in ("topk", "batchtopk"):
        p = sae.get(name).init(jax.random.key(0), D, F)
        assert int(p["k"]) == 10 == build_grid(TrainConfig(arch=name))[0]["k"]
    for arch in sae.ARCHITECTURES.values():
        for h in arch.all_hparams:
            assert HPARAM_DEFAULTS[h.name] == h.default, (arch.name, h.name)
            assert h.problem(h.default, F) is None, (arch.name, h.name)


@pytest.mark.parametrize("name", sae.TRAINABLE_ARCHS)
def test_the_loss_runs_on_the_spec_hyperparameters_alone(name):
    arch = sae.get(name)
    params = arch.init(jax.random.key(0), D, F)
    x = np.random.default_rng(0).normal(size=(16, D)).astype(np.float32)
    ctx = sae.StepContext(jnp.int32(0), jnp.float32(1), jnp.zeros(F, bool), k_max=10)
    hp = {h.name: jnp.asarray(h.default) for h in arch.hyper}
    loss, _ = arch.loss(params, x, hp, ctx)
    assert np.isfinite(float(loss))


@pytest.mark.parametrize("name", sae.EXPORTABLE_ARCHS)
def test_torch_tables_place_every_leaf(name):
    arch = sae.get(name)
    leaves = set(arch.leaf_dims())
    assert set(arch.interplm.leaves) == leaves
    assert set(arch.saelens.leaves) | {"scale"} == leaves  # SAELens keeps scale in a side file
    keys = [leaf.key for leaf in arch.interplm.leaves.values()]
    assert len(keys) == len(set(keys))


def test_neuron_baseline_is_neither_trained_nor_exported():
    assert "neuron" not in sae.TRAINABLE_ARCHS and "neuron" not in sae.EXPORTABLE_ARCHS
    assert sae.TRAINABLE_ARCHS == ("relu", "topk", "batchtopk", "jumprelu", "matryoshka")


def test_hparam_ranges_hand_checked():
    k = HParam("k", 10, "", integer=True, minimum=1, maximum="F")
    assert k.problem(1, 5) is None and k.problem(5, 5) is None
    assert k.problem(0, 5) == "must be in [1, F]"
    assert k.problem(6, 5) == "must be in [1, F] (F = 5)"
    assert k.problem(1e9, None) is None  # F unknown: checked later
    assert k.problem(2.5, 5) == "is not an integer"
    lr = HParam("lr", 1e-4, "", minimum=0.0, exclusive=True)
    assert lr.problem(0.0) == "must be > 0" and lr.problem(1e-9) is None
    beta = HParam("b", 0.9, "", minimum=0.0, maximum=1.0)
    assert beta.problem(1.0) is None and beta.problem(1.5) == "must be in [0, 1]"
    seed = HParam("seed", 0, "", integer=True, minimum=0)
    assert seed.problem(2**31) == "is too large (int32: at most 2147483647)"
    for bad, words in ((float("nan"), "not finite"), ("x", "not a number"), (True, "not a number"),
                       (-1, "must be >= 0")):
        with pytest.raises(InputError, match=f"c.yaml:train.hparams: seed={bad!r} .*{words}"):
            check_number(seed, bad, "c.yaml:train.hparams")
    assert check_number(seed, "7", "w") == 7 and isinstance(check_number(lr, 1, "w"), float)
