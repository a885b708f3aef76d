"""SAELens folders: our export's metadata (hook of the last layer = the final norm), the scale
folded by default, imports of every layout; and the real ``sae_lens`` package loading our exports
and saving SAEs we import (skipped, with the reason, where it is not installed: `make venv`
installs it)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from _saes import np_encode_raw, np_forward, random_sae
from interplm_jax.errors import InputError
from torch_bridge.models import hook_name
from torch_bridge.saelens import SAELENS_SCALE, read_saelens, write_saelens

ARCHS = ("relu", "topk", "batchtopk", "jumprelu")
MODEL = {"name": "facebook/esm2_t6_8M_UR50D", "n_layers": 6, "hidden_size": 8,
         "weights_sha256": "ab" * 32}


def _sae(arch: str, layer: int = 6, normalized: bool = True):
    sae = random_sae(arch, normalized=normalized)
    return sae.replace(meta={"layer": layer, "model": MODEL, "sweep": "runs/layer_6", "id": "sae003",
                             "step": 500, "store": "acts/esm2_8m"})


def _x(n: int = 64) -> np.ndarray:
    return np.random.default_rng(1).normal(size=(n, 8)).astype(np.float32)


@pytest.mark.parametrize("layer, hook", [(6, "esm.encoder.emb_layer_norm_after"),
                                         (3, "esm.encoder.layer.2")])
def test_metadata_names_model_layer_and_the_hook_of_hidden_states(tmp_path, layer, hook):
    write_saelens(_sae("relu", layer), tmp_path)
    md = json.loads((tmp_path / "cfg.json").read_text())["metadata"]
    assert md["model_name"] == "facebook/esm2_t6_8M_UR50D" and md["hook_layer"] == layer
    assert md["hook_name"] == hook == hook_name("esm2", layer, 6)
    assert md["model_class_name"] == "EsmForMaskedLM" and md["sae_lens_version"].startswith("6.")
    assert md["interplm_jax"]["scale"] == "folded" and md["interplm_jax"]["id"] == "sae003"
    back = read_saelens(tmp_path)
    assert back.meta["layer"] == layer and back.meta["model"] == MODEL
    assert back.meta["hook_name"] == hook and back.meta["scale_folded"]
    assert back.hparams == {"lr": 1e-4}
    # exported again, the imported SAE keeps its hook
    write_saelens(back, tmp_path / "again")
    assert json.loads((tmp_path / "again" / "cfg.json").read_text())["metadata"]["hook_name"] == hook


def test_scale_folded_by_default_raw_on_request(tmp_path, caplog):
    sae, x = _sae("relu"), _x()
    f_norm, recon = np_forward(sae, x)
    write_saelens(sae, tmp_path / "folded")
    write_saelens(sae, tmp_path / "raw", fold_scale=False)
    assert not (tmp_path / "folded" / SAELENS_SCALE).exists() and (tmp_path / "raw" / SAELENS_SCALE).exists()
    for name, scale in (("folded", "folded"), ("raw", "raw")):
        md = json.loads((tmp_path / name / "cfg.json").read_text())["metadata"]
        assert md["interplm_jax"]["scale"] == scale
        back = read_saelens(tmp_path / name)
        np.testing.assert_allclose(np_forward(back, x)[0], f_norm, atol=1e-5)
        np.testing.assert_allclose(np_forward(back, x)[1], recon, atol=1e-5)
    # raw weights: SAELens's features are the raw ones (the scale file is ours alone)
    np.testing.assert_allclose(np_encode_raw(read_saelens(tmp_path / "raw").replace(
        params={**sae.params, "scale": np.ones(24, np.float32)}), x), np_encode_raw(sae, x), atol=1e-6)
    write_saelens(_sae("relu", normalized=False), tmp_path / "plain")
    md = json.loads((tmp_path / "plain" / "cfg.json").read_text())["metadata"]
    assert md["interplm_jax"]["scale"] == "none"
    with caplog.at_level(logging.WARNING):
        write_saelens(_sae("topk"), tmp_path / "topk")  # cannot fold: raw, and said so
    assert "cannot have its scale folded" in caplog.text
    assert json.loads((tmp_path / "topk" / "cfg.json").read_text())["metadata"]["interplm_jax"]["scale"] == "raw"
    with pytest.raises(InputError, match="fold_scale is not possible for a topk SAE"):
        write_saelens(_sae("topk"), tmp_path / "topk2", fold_scale=True)


def test_export_script_folds_by_default_and_keeps_raw_on_request(tmp_path):
    from click.testing import CliRunner

    from interplm_jax.cli import load_script
    from interplm_jax.sae_dir import save_sae

    save_sae(tmp_path / "sae", _sae("relu"))
    main = load_script(Path(__file__).resolve().parents[1] / "scripts" / "export.py").main
    for flag, scale in (([], "folded"), (["--raw-scale"], "raw"), (["--fold-scale"], "folded")):
        out = tmp_path / scale / "-".join(flag)
        r = CliRunner().invoke(main, ["--sae-dir", str(tmp_path / "sae"), "--format", "saelens",
                                      "--out", str(out), *flag])
        assert r.exit_code == 0, r.output
        md = json.loads((out / "cfg.json").read_text())["metadata"]
        assert md["interplm_jax"]["scale"] == scale and md["hook_layer"] == 6


def test_older_layouts_keep_model_and_layer(tmp_path):
    write_saelens(_sae("relu", normalized=False), tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    md = cfg.pop("metadata")
    # our earlier exports: a "meta" block; SAELens before 6: the keys at the top level
    for layout in ({"meta": {"model_name": "esm2_8m", "hook_layer": 4}},
                   {"model_name": "esm2_8m", "hook_layer": 4, "hook_name": "esm.encoder.layer.3"}):
        (tmp_path / "cfg.json").write_text(json.dumps({**cfg, **layout}))
        back = read_saelens(tmp_path)
        assert back.meta["model"] == "esm2_8m" and back.meta["layer"] == 4
    assert md["hook_layer"] == 6


# ----------------------------------------------------------------------------- real sae_lens
def _sae_lens():
    try:
        import sae_lens
    except ImportError as e:
        pytest.skip(f"sae_lens is not installed ({e}); `make venv` installs it (CPU, --no-deps)")
    return sae_lens


@pytest.mark.parametrize("arch", ARCHS)
def test_sae_lens_loads_our_export(tmp_path, arch):
    sae_lens = _sae_lens()
    sae, x = _sae(arch), _x()
    write_saelens(sae, tmp_path)
    theirs = sae_lens.SAE.load_from_disk(str(tmp_path), device="cpu")
    md = theirs.cfg.metadata
    assert (md.model_name, md.hook_name, md.hook_layer) == (
        "facebook/esm2_t6_8M_UR50D", "esm.encoder.emb_layer_norm_after", 6)
    assert (theirs.cfg.d_in, theirs.cfg.d_sae, theirs.cfg.architecture()) == (
        8, 24, {"relu": "standard", "topk": "topk"}.get(arch, "jumprelu"))
    with torch.no_grad():
        f = theirs.encode(torch.from_numpy(x)).numpy()
        recon = theirs.decode(torch.from_numpy(f)).numpy()
    f_norm, recon_ref = np_forward(sae, x)
    # folded (default): SAELens's features are our normalized ones; TopK is written raw
    np.testing.assert_allclose(f, np_encode_raw(sae, x) if arch == "topk" else f_norm, atol=1e-5)
    np.testing.assert_allclose(recon, recon_ref, atol=1e-5)


@pytest.mark.parametrize("kind", ["standard", "topk", "jumprelu"])
def test_we_import_saes_saved_by_sae_lens(tmp_path, kind):
    sae_lens = _sae_lens()
    from sae_lens.saes.sae import SAEMetadata

    classes = {"standard": (sae_lens.StandardSAE, sae_lens.StandardSAEConfig, {}),
               "topk": (sae_lens.TopKSAE, sae_lens.TopKSAEConfig, {"k": 5}),
               "jumprelu": (sae_lens.JumpReLUSAE, sae_lens.JumpReLUSAEConfig, {})}
    cls, cfg_cls, extra = classes[kind]
    md = SAEMetadata(model_name="facebook/esm2_t6_8M_UR50D", hook_name="esm.encoder.layer.2",
                     hook_layer=3)
    theirs = cls(cfg_cls(d_in=8, d_sae=24, metadata=md, **extra))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.1 if name == "threshold" else 0.5))
        if kind == "jumprelu":
            theirs.threshold.abs_()
    theirs.save_model(str(tmp_path))
    ours = read_saelens(tmp_path)
    assert ours.meta["model"] == "facebook/esm2_t6_8M_UR50D" and ours.meta["layer"] == 3
    assert ours.meta["hook_name"] == "esm.encoder.layer.2"
    x = _x()
    with torch.no_grad():
        f = theirs.encode(torch.from_numpy(x))
        recon = theirs.decode(f).numpy()
    f_ours, recon_ours = np_forward(ours, x)
    assert (f.numpy() > 0).any()
    np.testing.assert_allclose(f_ours, f.numpy(), atol=1e-5)
    np.testing.assert_allclose(recon_ours, recon, atol=1e-5)
