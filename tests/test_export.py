"""Exports to InterPLM / SAELens and imports back: checked against the reference's own loader
and a plain NumPy forward."""

from __future__ import annotations

import importlib
import json
import logging

import numpy as np
import pytest
import torch
import yaml
from safetensors.numpy import load_file

from reference import inference as reference
from _saes import np_forward, random_sae
from interplm_jax.errors import InputError
from interplm_jax.sae_dir import load_sae, save_sae
from torch_bridge.export import interplm_state_dict, read_interplm, safe_torch_load, write_interplm
from torch_bridge.saelens import read_saelens, write_saelens
from torch_bridge.sae import TorchSAE

ARCHS = ("relu", "topk", "batchtopk", "jumprelu")


def _x(d=8, n=64, seed=1):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def _jax_forward(sae, x):
    """Our JAX forward (interplm_jax.sae.<arch>), when that architecture module exists."""
    try:
        arch = importlib.import_module("interplm_jax.sae").get(sae.arch)
    except (ImportError, AttributeError):
        return None  # the JAX architectures are not on this branch yet
    import jax.numpy as jnp

    params = {k: jnp.asarray(v) for k, v in sae.params.items()}
    f = np.asarray(arch.encode(params, jnp.asarray(x)))
    raw = arch.encode({**params, "scale": jnp.ones_like(params["scale"])}, jnp.asarray(x))
    return f, np.asarray(arch.decode(params, raw))


@pytest.mark.parametrize("arch", ARCHS)
def test_torch_sae_matches_numpy_and_jax(arch):
    sae = random_sae(arch)
    x = _x()
    f_ref, recon_ref = np_forward(sae, x)
    assert (f_ref > 0).any(axis=1).mean() > 0.5  # the check is not vacuous
    model = TorchSAE.from_saved(sae)
    with torch.no_grad():
        f = model.encode(torch.from_numpy(x)).numpy()
        recon = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(f, f_ref, atol=1e-5)
    np.testing.assert_allclose(recon, recon_ref, atol=1e-5)
    jax_out = _jax_forward(sae, x)
    if jax_out is not None:
        np.testing.assert_allclose(jax_out[0], f_ref, atol=1e-5)
        np.testing.assert_allclose(jax_out[1], recon_ref, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_interplm_round_trip(tmp_path, arch, caplog):
    sae = random_sae(arch)  # F = 24, of which 4 never fire (scale 0)
    write_interplm(sae, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ae.pt", "config.yaml"]
    with caplog.at_level(logging.INFO, logger="torch_bridge.export"):
        back = read_interplm(tmp_path / "ae.pt")
    assert "4 feature(s) with activation_rescale_factor 0 (never fired" in caplog.text
    assert back.arch == arch
    for key, value in sae.params.items():
        np.testing.assert_allclose(back.params[key], value, atol=1e-6, err_msg=key)


def test_interplm_state_dict_mapping():
    """DESIGN.md section 2: b_pre = bias, W_enc = encoder.weight.T, ..., scale = 1/factor."""
    sae = random_sae("relu")
    sd = interplm_state_dict(sae)
    p = sae.params
    np.testing.assert_array_equal(sd["bias"].numpy(), p["b_pre"])
    np.testing.assert_array_equal(sd["encoder.weight"].numpy(), p["W_enc"].T)
    np.testing.assert_array_equal(sd["decoder.weight"].numpy(), p["W_dec"].T)
    live = p["scale"] > 0
    np.testing.assert_allclose(sd["activation_rescale_factor"].numpy()[live], 1 / p["scale"][live])
    assert np.all(sd["activation_rescale_factor"].numpy()[~live] == 0)


@pytest.mark.parametrize("arch", ARCHS)
def test_reference_loader_reads_our_export(tmp_path, arch):
    """ae.pt + config.yaml -> the reference's own loader -> same forward as ours to 1e-5."""
    inference = reference()
    from interplm.sae.dictionary import JumpReLUSAE

    sae = random_sae(arch)
    write_interplm(sae, tmp_path)
    if arch == "jumprelu":  # the reference's load_sae cannot pick JumpReLU: its trainer
        ae = JumpReLUSAE.from_pretrained(tmp_path / "ae.pt", device="cpu")  # lacks dictionary_cls
    else:
        ae = inference.load_sae(tmp_path, device="cpu")
    expected_cls = {"relu": "ReLUSAE", "topk": "TopKSAE", "batchtopk": "BatchTopKSAE"}.get(arch)
    if expected_cls:
        assert type(ae).__name__ == expected_cls
    x = _x()
    f_ref, recon_ref = np_forward(sae, x)
    with torch.no_grad():
        xt = torch.from_numpy(x)
        recon = ae(xt).numpy()
        f = ae.encode(xt, normalize_features=True).numpy()
    np.testing.assert_allclose(recon, recon_ref, atol=1e-5)
    live = sae.params["scale"] > 0  # the reference divides by 0 for never-active features
    np.testing.assert_allclose(f[:, live], f_ref[:, live], atol=1e-5)


def test_reference_normalized_model_imports(tmp_path):
    """An ae_normalized.pt as the reference's normalization writes it (factors = max)."""
    reference()
    from interplm.sae.dictionary import ReLUSAE
    from interplm.sae.normalize import create_normalized_model

    torch.manual_seed(0)
    ae = ReLUSAE(8, 24)
    maxima = torch.rand(24) + 0.5
    maxima[:3] = 0
    torch.save(create_normalized_model(ae, maxima).state_dict(), tmp_path / "ae_normalized.pt")
    sae = read_interplm(tmp_path / "ae_normalized.pt")
    expected = np.where(maxima.numpy() > 0, 1 / np.maximum(maxima.numpy(), 1e-30), 0.0)
    np.testing.assert_allclose(sae.params["scale"], expected, rtol=1e-6)
    x = _x()
    with torch.no_grad():
        np.testing.assert_allclose(np_forward(sae, x)[1], ae(torch.from_numpy(x)).numpy(), atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_saelens_round_trip(tmp_path, arch):
    sae = random_sae(arch)
    write_saelens(sae, tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert cfg["d_in"] == 8 and cfg["d_sae"] == 24
    # read the raw file back with safetensors and run SAELens's formula on it in NumPy
    w = load_file(str(tmp_path / "sae_weights.safetensors"))
    x = _x().astype(np.float64)
    pre = (x - w["b_dec"] * cfg["apply_b_dec_to_input"]) @ w["W_enc"] + w["b_enc"]
    if cfg["architecture"] == "topk":
        kth = np.sort(pre, axis=1)[:, -cfg["k"]][:, None]
        f = np.where(pre >= kth, np.maximum(pre, 0), 0)
    elif cfg["architecture"] == "jumprelu":
        f = np.maximum(pre, 0) * (pre > w["threshold"])
    else:
        f = np.maximum(pre, 0)
    f_ref, recon_ref = np_forward(sae, x)
    np.testing.assert_allclose(f @ w["W_dec"] + w["b_dec"], recon_ref, atol=1e-5)
    back = read_saelens(tmp_path)
    np.testing.assert_allclose(np_forward(back, x)[0], f_ref, atol=1e-5)
    np.testing.assert_allclose(np_forward(back, x)[1], recon_ref, atol=1e-5)


@pytest.mark.parametrize("arch", ["relu", "jumprelu", "batchtopk"])
def test_saelens_fold_scale_gives_normalized_features(tmp_path, arch):
    sae = random_sae(arch)
    write_saelens(sae, tmp_path, fold_scale=True)
    assert not (tmp_path / "interplm_feature_scale.safetensors").exists()
    back = read_saelens(tmp_path)
    x = _x()
    f_ref, recon_ref = np_forward(sae, x)
    f_back, recon_back = np_forward(back, x)
    np.testing.assert_allclose(f_back, f_ref, atol=1e-5)
    np.testing.assert_allclose(recon_back, recon_ref, atol=1e-5)


def test_saelens_fold_refused_for_topk(tmp_path):
    with pytest.raises(InputError, match="topk"):
        write_saelens(random_sae("topk"), tmp_path, fold_scale=True)


def test_wrong_shape_names_key_and_expected_shape(tmp_path):
    sd = interplm_state_dict(random_sae("relu"))
    sd["bias"] = torch.zeros(7)
    torch.save(sd, tmp_path / "ae.pt")
    with pytest.raises(InputError, match=r"'bias' has shape \(7,\); expected \(8,\)"):
        read_interplm(tmp_path / "ae.pt")


def test_missing_key_is_named(tmp_path):
    sd = interplm_state_dict(random_sae("jumprelu"))
    del sd["threshold"]
    torch.save(sd, tmp_path / "ae.pt")
    with pytest.raises(InputError, match=r"missing key 'threshold' \(expected shape \(24,\)"):
        read_interplm(tmp_path / "ae.pt", arch="jumprelu")


def test_topk_vs_batchtopk_needs_config_or_arch(tmp_path):
    write_interplm(random_sae("batchtopk"), tmp_path)
    assert read_interplm(tmp_path / "ae.pt").arch == "batchtopk"  # from config.yaml
    (tmp_path / "config.yaml").unlink()
    with pytest.raises(InputError, match="TopK or BatchTopK"):
        read_interplm(tmp_path / "ae.pt")
    assert read_interplm(tmp_path / "ae.pt", arch="topk").arch == "topk"


def test_pickle_that_is_not_a_state_dict_is_refused(tmp_path):
    torch.save(torch.nn.Linear(3, 2), tmp_path / "module.pt")
    with pytest.raises(InputError, match="refused"):
        safe_torch_load(tmp_path / "module.pt")
    torch.save({"encoder.weight": torch.zeros(2, 2), "note": "text"}, tmp_path / "mixed.pt")
    with pytest.raises(InputError, match="not tensors"):
        read_interplm(tmp_path / "mixed.pt")


def test_half_precision_tensors_import_and_k_must_be_a_whole_number(tmp_path):
    """bfloat16 weights are floating point (read as float32); a float k of a whole value is
    read as that integer, 4.5 is refused (issue 13 item 13: no silent truncation)."""
    sae = random_sae("topk")
    sd = interplm_state_dict(sae)
    torch.save({k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in sd.items()},
               tmp_path / "ae.pt")
    back = read_interplm(tmp_path / "ae.pt", arch="topk")
    for key, value in sae.params.items():  # bfloat16 keeps 8 significant bits: 2^-8 relative
        np.testing.assert_allclose(back.params[key], value, rtol=2 * 2.0**-8, err_msg=key)
    assert back.params["k"].dtype == np.int32 and int(back.params["k"]) == 4
    for k, ok in ((4.0, True), (4.5, False)):
        torch.save({**sd, "k": torch.tensor(k)}, tmp_path / "ae.pt")
        if ok:
            assert int(read_interplm(tmp_path / "ae.pt", arch="topk").params["k"]) == 4
        else:
            with pytest.raises(InputError, match=r"ae\.pt: key 'k' holds float32 values \[4\.5\]; "
                                                 r"expected integers"):
                read_interplm(tmp_path / "ae.pt", arch="topk")


def test_saelens_k_must_be_a_positive_integer(tmp_path):
    write_saelens(random_sae("topk"), tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert read_saelens(tmp_path).params["k"] == cfg["k"] == 4
    for bad in ("four", 0, None):
        (tmp_path / "cfg.json").write_text(json.dumps({**cfg, "k": bad}))
        message = "missing key 'k'" if bad is None else f"key 'k' is {bad!r}; expected a positive"
        with pytest.raises(InputError, match=rf"cfg\.json: {message}"):
            read_saelens(tmp_path)


def test_saelens_wrong_shape(tmp_path):
    sae = random_sae("relu")
    write_saelens(sae, tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    cfg["d_sae"] = 25
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match=r"'W_enc' has shape \(8, 24\); expected \(8, 25\)"):
        read_saelens(tmp_path)


def test_sae_dir_round_trip_and_config_is_yaml(tmp_path):
    sae = random_sae("topk")
    save_sae(tmp_path / "s", sae)
    back = load_sae(tmp_path / "s")
    assert back.arch == "topk" and int(back.params["k"]) == 4 and back.hparams == {"lr": 1e-4}
    for k, v in sae.params.items():
        np.testing.assert_array_equal(back.params[k], v)
    write_interplm(sae, tmp_path / "s")
    cfg = yaml.safe_load((tmp_path / "s" / "config.yaml").read_text())
    assert cfg["trainer_cfg"]["k"] == 4 and "auxk_alpha" not in cfg["trainer_cfg"]


def test_the_neuron_baseline_has_no_torch_export(tmp_path):
    from interplm_jax.errors import InputError
    from interplm_jax.normalize import neuron_sae
    from torch_bridge.export import write_interplm
    from torch_bridge.saelens import write_saelens

    sae = neuron_sae(np.zeros(4, np.float32), np.ones(4, np.float32))
    for write in (write_interplm, write_saelens):
        with pytest.raises(InputError, match="neuron baseline is not an SAE"):
            write(sae, tmp_path / write.__name__)
        assert not (tmp_path / write.__name__).exists()


def test_torch_and_jax_neuron_baselines_agree():
    import torch

    from interplm_jax import sae as sae_arch
    from interplm_jax.normalize import neuron_sae
    from torch_bridge.sae import TorchSAE

    rng = np.random.default_rng(4)
    x = rng.normal(size=(40, 6)).astype(np.float32)
    saved = neuron_sae(x.min(0) + 0.2, x.max(0) - 0.2)
    want = np.asarray(sae_arch.encode("neuron", saved.params, x))
    got = TorchSAE.from_saved(saved).encode(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert got.max() == 1.0 and got.min() == 0.0
