"""Matryoshka BatchTopK: prefix sizes by hand, the loss against plain NumPy, n = 1 is BatchTopK,
a grid trains, and the SAELens export encodes as our inference does."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file
from train_streams import factory, toy_activations

from interplm_jax import sae as sae_arch
from interplm_jax.errors import InputError
from interplm_jax.sae import StepContext, matryoshka, topk
from interplm_jax.sae_dir import SavedSAE
from interplm_jax.train import TrainConfig, train_sweep
from torch_bridge.export import write_interplm
from torch_bridge.saelens import write_saelens

D, F, B = 8, 64, 32
MAX = matryoshka.MAX_PREFIXES


def test_prefix_sizes_by_hand():
    assert matryoshka.prefix_sizes(64, 4) == (8, 16, 32, 64)
    assert matryoshka.prefix_sizes(10240) == (80, 160, 320, 640, 1280, 2560, 5120, 10240)
    assert matryoshka.prefix_sizes(6, 4) == (1, 1, 3, 6)  # at least one feature, floors


def _setup(seed=0):
    k = jax.random.split(jax.random.key(seed), 3)
    params = {**topk.init(k[0], D, F, k=3), "b_pre": 0.1 * jax.random.normal(k[1], (D,))}
    x = np.random.default_rng(seed).normal(size=(B, D)).astype(np.float32)
    return params, jnp.asarray(x)


def _np_loss(params, x, k, n, auxk_alpha):
    """The loss in NumPy: BatchTopK features, the last n of the 8 prefixes, no dead features."""
    p = {name: np.asarray(v, np.float64) for name, v in params.items()}
    acts = np.maximum((x - p["b_pre"]) @ p["W_enc"] + p["b_enc"], 0)
    cut = np.sort(acts.ravel())[::-1][k * B - 1]
    f = np.where(acts >= cut, acts, 0)
    losses = []
    for m in matryoshka.prefix_sizes(F)[-n:]:
        x_hat = f[:, :m] @ p["W_dec"][:m] + p["b_pre"]
        losses.append(np.mean(np.sum((x - x_hat) ** 2, axis=-1)))
    return np.mean(losses), losses


@pytest.mark.parametrize("n", [1, 3, 8])
def test_loss_equals_numpy_and_n1_is_batchtopk(n):
    params, x = _setup()
    hp = {"k": jnp.int32(3), "auxk_alpha": jnp.float32(0.5), "threshold_beta": jnp.float32(0.9),
          "threshold_start_step": jnp.int32(0), "prefixes": jnp.int32(n)}
    ctx = StepContext(jnp.int32(0), jnp.float32(1.0), jnp.zeros(F, bool), k_max=3)
    total, aux = matryoshka.loss(params, x, hp, ctx)
    want, losses = _np_loss(params, np.asarray(x, np.float64), 3, n, 0.5)
    np.testing.assert_allclose(total, want, rtol=1e-5)
    np.testing.assert_allclose(aux.parts["recon_full"], losses[-1], rtol=1e-5)
    np.testing.assert_allclose(aux.parts["recon_first"], losses[0], rtol=1e-5)
    assert float(aux.parts["auxk"]) == 0.0  # no dead features
    if n > 1:
        assert abs(losses[0] - losses[-1]) > 1e-3  # the prefixes differ: the weighting matters
    bt_total, bt_aux = topk.loss_batchtopk(params, x, hp, ctx)
    np.testing.assert_allclose(aux.x_hat, bt_aux.x_hat, rtol=1e-5, atol=1e-6)
    if n == 1:
        np.testing.assert_allclose(total, bt_total, rtol=1e-6)
        train = {name: params[name] for name in topk.TRAINABLE}
        grads = jax.grad(lambda t: matryoshka.loss({**params, **t}, x, hp, ctx)[0])(train)
        bt_grads = jax.grad(lambda t: topk.loss_batchtopk({**params, **t}, x, hp, ctx)[0])(train)
        for name in topk.TRAINABLE:
            np.testing.assert_allclose(grads[name], bt_grads[name], rtol=1e-5, atol=1e-7)


def test_grid_trains_and_writes_metrics(tmp_path):
    data = toy_activations(n=B * 8, d=D, seed=3)
    cfg = TrainConfig(arch="matryoshka", steps=24, batch_size=B, d_sae=F, log_every=1,
                      checkpoint_every=24, warmup_steps=1, decay_start=-1,
                      grid={"prefixes": [1, 4]}, hparams={"k": 4, "lr": 1e-2})
    res = train_sweep(cfg, factory(data, B), D, tmp_path / "sweep", layer=1)
    lines = [json.loads(ln) for ln in (tmp_path / "sweep" / "metrics.jsonl").read_text().splitlines()]
    by = {sae: [ln for ln in lines if ln["sae"] == sae] for sae in ("sae000", "sae001")}
    for rows in by.values():
        first, last = (np.mean([r["recon_full"] for r in part]) for part in (rows[:4], rows[-4:]))
        assert last < 0.8 * first  # it learns
        assert rows[-1]["l0"] == pytest.approx(4.0)            # BatchTopK: k per token on average
    last = {sae: rows[-1] for sae, rows in by.items()}
    assert last["sae000"]["recon_first"] == last["sae000"]["recon_full"]  # n = 1: one prefix
    assert last["sae001"]["recon_first"] != last["sae001"]["recon_full"]
    # the point of the nesting: the first F/8 features of the Matryoshka SAE reconstruct the
    # data on their own better than the first F/8 of the BatchTopK SAE trained beside it
    x = jnp.asarray(data)
    first = []
    for i in range(2):
        p = {k: jnp.asarray(v[i]) for k, v in res.params.items()}
        f = topk.batch_topk_mask(topk.post_relu(p, x), p["k"], 4)
        first.append(float(matryoshka.prefix_losses(p, f, x)[0][MAX - 4]))
    assert first[1] < first[0]
    assert res.ok.all() and res.params["W_dec"].shape == (2, F, D)
    assert json.loads((tmp_path / "sweep" / "grid.json").read_text())[1]["prefixes"] == 4


def test_prefixes_out_of_range_is_refused():
    from interplm_jax.config import from_dict

    with pytest.raises(InputError, match=r"prefixes=9 must be in \[1, 8\]"):
        from_dict(TrainConfig, {"arch": "matryoshka", "grid": {"prefixes": [2, 9]}}, "c.yaml:train")


def test_saelens_export_encodes_as_our_inference(tmp_path):
    params, x = _setup(1)
    params = {**params, "threshold": jnp.float32(0.05),
              "scale": jnp.linspace(0.5, 1.5, F, dtype=jnp.float32)}
    sae = SavedSAE("matryoshka", jax.device_get(params), {"lr": 1e-4, "prefixes": 4},
                   {"layer": 2, "model": "tiny"})
    ours = np.asarray(sae_arch.encode("matryoshka", params, x))
    assert (ours > 0).any() and (ours == 0).any()
    xs = np.asarray(x)
    for fold in (False, True):  # raw weights + the scale file; the scale folded in
        out = tmp_path / f"fold_{fold}"
        write_saelens(sae, out, fold_scale=fold)
        cfg = json.loads((out / "cfg.json").read_text())
        assert cfg["architecture"] == "jumprelu" and cfg["d_sae"] == F
        w = load_file(out / "sae_weights.safetensors")
        # SAELens's jumprelu: f = ReLU(pre) * (pre > threshold), pre = (x - b_dec) W_enc + b_enc
        pre = (xs - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
        f_saelens = np.maximum(pre, 0) * (pre > w["threshold"])
        if not fold:
            np.testing.assert_array_equal(w["threshold"], np.full(F, 0.05, np.float32))
            f_saelens = f_saelens * load_file(out / "interplm_feature_scale.safetensors")["scale"]
        np.testing.assert_allclose(f_saelens, ours, rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match="not an SAE that the InterPLM format has a place for"):
        write_interplm(sae, tmp_path / "interplm")


def test_sae_lens_loads_the_export(tmp_path):
    sae_lens = pytest.importorskip("sae_lens")
    import torch

    params, x = _setup(2)
    params = {**params, "threshold": jnp.float32(0.05),
              "scale": jnp.linspace(0.5, 1.5, F, dtype=jnp.float32)}
    sae = SavedSAE("matryoshka", jax.device_get(params), {"lr": 1e-4, "prefixes": 4},
                   {"layer": 2, "model": "tiny"})
    write_saelens(sae, tmp_path)  # the scale folded in (the default)
    theirs = sae_lens.SAE.load_from_disk(str(tmp_path), device="cpu")
    assert theirs.cfg.architecture() == "jumprelu"
    with torch.no_grad():
        f = theirs.encode(torch.from_numpy(np.array(x))).numpy()
    ours = np.asarray(sae_arch.encode("matryoshka", params, x))
    np.testing.assert_allclose(f, ours, rtol=1e-5, atol=1e-6)
