"""Reading an SAE directory and its jitted feature function, for every architecture."""

import numpy as np
import pytest

import interplm_jax.sae as sae_arch
from interplm_jax.errors import InputError
from interplm_jax.normalize import neuron_sae
from interplm_jax.sae.features import feature_function
from interplm_jax.sae_dir import SavedSAE, check_params, load_sae, save_sae


def _params(rng, d=6, F=10):
    return {"b_pre": rng.normal(size=d), "W_enc": rng.normal(size=(d, F)),
            "b_enc": rng.normal(size=F), "W_dec": rng.normal(size=(F, d)),
            "scale": rng.uniform(size=F)}


def test_directory_round_trip_gives_the_same_params_and_features(tmp_path):
    rng = np.random.default_rng(0)
    params = {k: v.astype(np.float32) for k, v in _params(rng).items()}
    save_sae(tmp_path / "sae", SavedSAE("relu", params))
    saved = load_sae(tmp_path / "sae")
    arch, a, b = saved.arch, saved.params, check_params("relu", params)
    assert arch == "relu" and a.keys() == b.keys() == params.keys()
    x = rng.normal(size=(37, 6)).astype(np.float32)  # 37 rows: padded to the bucket inside
    want = np.maximum((x - params["b_pre"]) @ params["W_enc"] + params["b_enc"], 0) * params["scale"]
    got = feature_function(arch, a, bucket=16)(x)
    assert got.shape == (37, 10)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_bad_sae_directories_are_named(tmp_path):
    rng = np.random.default_rng(0)
    params = {k: v.astype(np.float32) for k, v in _params(rng).items()}
    with pytest.raises(InputError, match=r"p: missing key\(s\) \['W_dec'\]"):
        save_sae(tmp_path / "p", SavedSAE("relu", {k: v for k, v in params.items() if k != "W_dec"}))
    with pytest.raises(InputError, match=r"'W_dec' has shape \(6, 10\); expected \(10, 6\)"):
        save_sae(tmp_path / "q", SavedSAE("relu", {**params, "W_dec": params["W_enc"]}))
    (tmp_path / "d").mkdir()
    with pytest.raises(InputError, match="not an SAE directory"):
        load_sae(tmp_path / "d")


@pytest.mark.parametrize("arch", ["relu", "topk", "batchtopk", "jumprelu"])
def test_feature_function_is_the_architectures_encode(arch, tmp_path):
    """Padding to the bucket and the NumPy round trip change nothing, for every architecture."""
    import jax

    params = {k: np.asarray(v) for k, v in sae_arch.get(arch).init(jax.random.key(0), 8, 24).items()}
    if "threshold" in params:
        params["threshold"] = np.full_like(params["threshold"], 0.05)
    save_sae(tmp_path, SavedSAE(arch, params))
    saved = load_sae(tmp_path)
    x = np.random.default_rng(1).normal(size=(21, 8)).astype(np.float32)
    want = np.asarray(sae_arch.encode(arch, saved.params, x))
    assert (want != 0).any()
    np.testing.assert_allclose(feature_function(saved.arch, saved.params, bucket=16)(x), want,
                               rtol=1e-6, atol=1e-6)


def test_neuron_baseline_through_the_feature_function():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(50, 5)).astype(np.float32)
    lo, hi = x.min(0) + 0.1, x.max(0) - 0.1
    hi[3] = lo[3]  # a constant neuron: scale 0
    sae = neuron_sae(lo, hi)
    got = feature_function(sae.arch, sae.params)(x)
    want = np.clip((x - lo) / np.where(hi > lo, hi - lo, np.inf), 0, 1)  # DESIGN.md Q8
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert sae.arch == "neuron" and sae.meta["baseline"] == "neuron" and (got[:, 3] == 0).all()
    assert (x > hi).any() and got.max() == 1.0  # values above the set's maximum are clipped


@pytest.mark.parametrize("arch", ["relu", "topk", "batchtopk", "jumprelu"])
def test_annotation_encoder_and_its_segment_max_equal_the_feature_function(arch):
    """annotate's restricted encoder and per-protein device maximum == the chosen columns."""
    import jax

    from interplm_jax.annotate.activations import sae_encoder

    params = {k: np.asarray(v) for k, v in sae_arch.get(arch).init(jax.random.key(0), 8, 24).items()}
    if "threshold" in params:
        params["threshold"] = np.full_like(params["threshold"], 0.05)
    x = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
    feats = np.array([1, 5, 7, 20])
    full = feature_function(arch, params)(x)
    enc = sae_encoder(params, feats, arch)
    np.testing.assert_allclose(enc(x), full[:, feats], rtol=1e-6, atol=1e-6)
    seg = np.repeat(np.arange(3, dtype=np.int32), [100, 120, 80])
    want = np.stack([full[:100].max(0), full[100:220].max(0), full[220:].max(0)])[:, feats]
    np.testing.assert_allclose(enc.segment_max(x, seg, 3), want, rtol=1e-6, atol=1e-6)
