"""Reading the SAE an analysis uses, and its jitted feature function."""

import json

import numpy as np
import pytest

from interplm_jax.analysis.sae_io import feature_function, load_params
from interplm_jax.errors import InputError


def _params(rng, d=6, F=10):
    return {"b_pre": rng.normal(size=d), "W_enc": rng.normal(size=(d, F)),
            "b_enc": rng.normal(size=F), "W_dec": rng.normal(size=(F, d)),
            "scale": rng.uniform(size=F)}


def test_directory_and_npz_give_the_same_params_and_features(tmp_path):
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    params = {k: v.astype(np.float32) for k, v in _params(rng).items()}
    (tmp_path / "sae").mkdir()
    save_file(params, str(tmp_path / "sae" / "params.safetensors"))
    (tmp_path / "sae" / "sae.json").write_text(json.dumps({"arch": "relu"}))
    np.savez(tmp_path / "p.npz", **params)
    arch, a = load_params(tmp_path / "sae")
    _, b = load_params(tmp_path / "p.npz")
    assert arch == "relu" and a.keys() == b.keys() == params.keys()
    x = rng.normal(size=(37, 6)).astype(np.float32)  # 37 rows: padded to the bucket inside
    want = np.maximum((x - params["b_pre"]) @ params["W_enc"] + params["b_enc"], 0) * params["scale"]
    got = feature_function(a, arch, bucket=16)(x)
    assert got.shape == (37, 10)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_bad_sae_files_are_named(tmp_path):
    np.savez(tmp_path / "p.npz", W_enc=np.zeros((3, 4)))
    with pytest.raises(InputError, match=r"p.npz: missing parameter\(s\) \['W_dec'\]"):
        load_params(tmp_path / "p.npz")
    np.savez(tmp_path / "q.npz", W_enc=np.zeros((3, 4)), W_dec=np.zeros((3, 4)))
    with pytest.raises(InputError, match="are not"):
        load_params(tmp_path / "q.npz")
    (tmp_path / "d").mkdir()
    with pytest.raises(InputError, match="not an SAE directory"):
        load_params(tmp_path / "d")
