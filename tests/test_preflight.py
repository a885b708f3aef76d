"""Centring/scaling folded into the saved SAEs, and the preflight before training."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from _saes import np_encode_raw, random_sae

from interplm_jax.data import TokenStream
from interplm_jax.errors import InputError, StoreError
from interplm_jax.input_transform import InputTransform, fold
from interplm_jax.sae_dir import SavedSAE
from interplm_jax.store import write_store
from interplm_jax.store.stats import load_stats, nonfinite_shards
from interplm_jax.sweep_saes import read_sweep
from interplm_jax.train import TrainConfig
from interplm_jax.train.preflight import check_dry_run, check_statistics
from interplm_jax.train.run import train_layers

D, OUTLIER = 16, 5


def planted_store(path, outlier=40.0, shift=4.0, n=40, seed=0):
    """A store whose layer 1 has a large common mean and one outlier dimension."""
    rng = np.random.default_rng(seed)
    scale = np.ones(D)
    scale[OUTLIER] = outlier
    mean = shift * np.abs(rng.normal(size=D)) + shift
    acts = [(mean + rng.normal(size=(int(m), D)) * scale).astype(np.float32)
            for m in rng.integers(20, 60, size=n)]
    return write_store(path, [f"p{i}" for i in range(n)], {1: acts}, shard_size=8)


@pytest.mark.parametrize("arch", ["relu", "topk", "batchtopk", "jumprelu"])
def test_folded_sae_on_raw_inputs_equals_the_trained_one_on_transformed_inputs(arch):
    rng = np.random.default_rng(3)
    sae = random_sae(arch, d=D, F=40, normalized=False)
    t = InputTransform(rng.normal(size=D).astype(np.float32) * 5, 0.37)
    x = (rng.normal(size=(50, D)) * 3 + t.shift).astype(np.float32)
    folded = SavedSAE(arch, fold(arch, sae.params, t), sae.hparams, sae.meta)
    f_trained = np_encode_raw(sae, t(x).astype(np.float64))
    f_folded = np_encode_raw(folded, x.astype(np.float64))
    assert (f_trained > 0).mean() > 0.05
    np.testing.assert_allclose(f_folded, f_trained / t.scale, rtol=1e-4, atol=1e-5)
    bias = "b_dec" if arch == "jumprelu" else "b_pre"
    x_hat_trained = f_trained @ sae.params["W_dec"] + sae.params[bias]  # in transformed space
    x_hat_folded = f_folded @ folded.params["W_dec"] + folded.params[bias]
    np.testing.assert_allclose(x_hat_folded, x_hat_trained / t.scale + t.shift, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(folded.params["W_dec"], sae.params["W_dec"])  # rows stay unit norm


def test_centring_only_is_b_pre_plus_mean():
    sae = random_sae("relu", d=D, F=8)
    mu = np.arange(D, dtype=np.float32)
    p = fold("relu", sae.params, InputTransform(mu, 1.0))
    np.testing.assert_allclose(p["b_pre"], sae.params["b_pre"] + mu, rtol=1e-6)
    np.testing.assert_array_equal(p["b_enc"], sae.params["b_enc"])


def test_sqrt_d_scale_makes_the_rms_token_norm_sqrt_d(tmp_path):
    store = planted_store(tmp_path / "s")
    x = store.rows(1, 0, store.n_tokens)
    for center in (False, True):
        t = InputTransform.of(center, "sqrt_d", load_stats(store, 1))
        rms = np.sqrt(np.mean(np.sum(t(x).astype(np.float64) ** 2, axis=1)))
        assert rms == pytest.approx(np.sqrt(D), rel=1e-5)
    np.testing.assert_allclose(InputTransform.of(True, "none", load_stats(store, 1)).shift,
                               x.astype(np.float64).mean(0), rtol=1e-5)


def test_preflight_flags_the_planted_store_and_passes_a_centred_clean_one(tmp_path):
    stats = load_stats(planted_store(tmp_path / "bad"), 1)
    warnings = check_statistics(stats, center=False, max_mean_ratio=0.5)
    assert len(warnings) == 2
    assert "mean activation dominates the token norm" in warnings[0]
    assert "train.input_center: true" in warnings[0]
    assert f"1 outlier dimension(s) [{OUTLIER}]" in warnings[1]
    clean = load_stats(planted_store(tmp_path / "clean", outlier=1.0), 1)
    assert clean.mean_norm_ratio > 0.5  # the mean dominates, but the inputs are centred
    assert check_statistics(clean, center=True, max_mean_ratio=0.5) == []
    assert len(check_statistics(clean, center=False, max_mean_ratio=0.5)) == 1


def test_dry_run_warnings_name_the_sae_and_what_to_change():
    grid = [{"id": "sae000", "arch": "relu", "lr": 1.0, "l1": 0.1},
            {"id": "sae001", "arch": "relu", "lr": 1e-4, "l1": 5.0},
            {"id": "sae002", "arch": "relu", "lr": 1e-4, "l1": 0.1}]
    last = {"sae001": {"dead": 0.97}, "sae002": {"dead": 0.1}}
    w = check_dry_run(grid, np.array([False, True, True]), last, 200, 0.9)
    assert len(w) == 2
    assert "SAE sae000 (lr=1.0, l1=0.1) hit a non-finite loss within 200 steps: lower its lr" in w[0]
    assert "SAE sae001 (lr=0.0001, l1=5.0) has 97% of its features dead after 200 steps" in w[1]


def _cfg(**kw):
    base = dict(steps=40, batch_size=32, expansion=2, grid={"lr": [1e-3, 3e-3]}, log_every=20,
                checkpoint_every=20, preflight_steps=20)
    return TrainConfig(**{**base, **kw})


def test_train_with_centring_saves_sae_that_gives_the_centred_pipelines_features(tmp_path):
    """Folded SAE on raw rows == the trained parameters on centred (and scaled) rows, / s."""
    store = planted_store(tmp_path / "s")
    cfg = _cfg(input_center=True, input_scale="sqrt_d")
    result = train_layers(cfg, store.url, tmp_path / "runs")[1]
    t = InputTransform.of(True, "sqrt_d", load_stats(store, 1))
    saved = json.loads((tmp_path / "runs" / "layer_1" / "input_transform.json").read_text())
    np.testing.assert_array_equal(saved["shift"], t.shift.tolist())
    x = store.rows(1, 0, 500).astype(np.float64)
    saes = read_sweep(tmp_path / "runs" / "layer_1")
    for g, (sae_id, sae) in enumerate(saes.items()):
        trained = SavedSAE("relu", {k: v[g] for k, v in result.params.items()}, {}, {})
        f_pipeline = np_encode_raw(trained, t(x.astype(np.float32)).astype(np.float64))
        assert (f_pipeline > 0).any()
        np.testing.assert_allclose(np_encode_raw(sae, x), f_pipeline / t.scale, rtol=1e-4, atol=1e-5)
    # the preflight ran a dry run and kept its report; only the outlier warning is left
    report = json.loads((tmp_path / "runs" / "layer_1" / "preflight" / "preflight.json").read_text())
    assert report["dry_run_steps"] == 4 and report["input_centred"] is True
    assert [w for w in result.preflight if "mean activation" in w] == []
    assert any("outlier dimension" in w for w in result.preflight)
    # resuming with another transform is refused
    with pytest.raises(InputError, match="another input transform"):
        train_layers(_cfg(), store.url, tmp_path / "runs", resume=True)


def test_preflight_error_stops_before_training(tmp_path):
    store = planted_store(tmp_path / "s")
    with pytest.raises(InputError, match=r"preflight of layer 1 \(train.preflight: error\)"):
        train_layers(_cfg(preflight="error"), store.url, tmp_path / "runs")
    assert not (tmp_path / "runs" / "layer_1" / "checkpoints").exists()
    assert (tmp_path / "runs" / "layer_1" / "preflight" / "preflight.json").exists()


@pytest.mark.parametrize("partials", [True, False])
def test_non_finite_rows_anywhere_stop_training_before_anything_is_written(tmp_path, partials):
    """The statistics tell that a layer holds NaN; the shard partials (or, without them, a scan
    in shard order) say where: the error names the shard, row and protein, and --out stays
    absent, even when the NaN is in a shard that training would read late (issue 13)."""
    rng = np.random.default_rng(0)
    acts = [rng.normal(size=(20, D)).astype(np.float32) for _ in range(8)]
    ids, cfg = [f"p{i}" for i in range(8)], _cfg()
    clean = write_store(tmp_path / "clean", ids, {1: acts}, shard_size=2)
    first = TokenStream(clean, 1, cfg.batch_size, cfg.seed).shard_order(0)[0]
    bad = 3 if first != 3 else 2  # a shard (of 2 proteins) that training does not read first
    acts[2 * bad + 1][4, 7] = np.inf  # row 4 of the shard's second protein
    store = write_store(tmp_path / "s", ids, {1: acts}, shard_size=2)
    assert nonfinite_shards(store, 1) == [bad]
    if not partials:
        shutil.rmtree(tmp_path / "s" / "stats")  # made again, in one pass, without partials
    with pytest.raises(StoreError, match=rf"layer 1 holds non-finite values \(NaN/Inf\) in 1 "
                                         rf"row\(s\) of shard {bad}, first row {40 * bad + 24} "
                                         rf"\(protein 'p{2 * bad + 1}'\)"):
        train_layers(cfg, store.url, tmp_path / "runs")
    assert nonfinite_shards(store, 1) == (None if not partials else [bad])
    assert not (tmp_path / "runs").exists()
