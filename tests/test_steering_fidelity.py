"""Steering and fidelity inside the tiny ESM-2 and ESM C (through nnsight), checked directly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _saes import random_sae
from interplm_jax.errors import InputError
from interplm_jax.sae_dir import SavedSAE
from torch_bridge.fidelity import fidelity_table, fidelity_tables, loss_recovered, pct_loss_recovered
from torch_bridge.intervene import clean_forward, logits_with_edit, logits_with_hidden, tokenize, wrap
from torch_bridge.models import load_masked_lm
from torch_bridge.sae import TorchSAE
from torch_bridge.steering import Clamp, clamp_sweep, steer

SEQ = "MKTAYIAKQRQISFVKSHFSRQ"
PROTEINS = [SEQ, "MSLEQKKGADIISKILQIQNSIGKTTSPSTLKTKLSEISRKEQENARIQSKLSDLQKKKIDIDNKLLKEKQNLIKEEILERKKLEVLTKKQQKDEIEHQKKLKREIDAIKASTQYITDVSISSYNNTIPETEPEYDLFISHASEDKEDFVRPLAETLQQLGVNVWYDEFTLKVGDSLRQKIDSGLRNSKYGTVVLSTDFIKKDWTNYELDGLVAREMNGHKMILPIWHKITKNDVLDYSPNLADKVALNTSVNSIEEIAHQLADVILNR"[:60], "GSHMASNK"]


@pytest.fixture(scope="module")
def lm_tok(tiny_plm):
    return load_masked_lm(tiny_plm)


def _sae_for(lm, arch="relu", seed=0) -> SavedSAE:
    d = lm.config.hidden_size
    return random_sae(arch, d=d, F=3 * d, seed=seed)


@pytest.mark.parametrize("layer", [2, 4])  # 4 = last layer: the final norm's output is patched
def test_nothing_clamped_gives_clean_logits_exactly(lm_tok, layer):
    lm, tok = lm_tok
    sae = TorchSAE.from_saved(_sae_for(lm))
    res = steer(lm, tok, sae, layer, SEQ, {"none": [], "also none": []})
    ids, attn = tokenize(tok, [SEQ])
    with torch.no_grad():
        clean = torch.softmax(lm(ids, attention_mask=attn).logits[0, 1:-1], -1).numpy()
    np.testing.assert_array_equal(res.probs[0], clean)
    np.testing.assert_array_equal(res.probs[1], clean)


@pytest.mark.parametrize("layer", [1, 4])
def test_clamp_moves_hidden_state_by_value_minus_f_times_decoder_row(lm_tok, layer):
    lm, tok = lm_tok
    saved = _sae_for(lm, seed=3)
    sae = TorchSAE.from_saved(saved)
    ids, attn = tokenize(tok, [SEQ])
    _, hidden = clean_forward(lm, ids, attn, layer)  # hidden_states[layer], independently
    # f from the plain NumPy formula on the clean hidden state; clamp a feature that fires
    h = hidden[0].double().numpy()
    p = {k: v.astype(np.float64) for k, v in saved.params.items()}
    f = np.maximum((h - p["b_pre"]) @ p["W_enc"] + p["b_enc"], 0)
    value, positions = 2.5, (0, 3, 7)
    feature = int(np.argmax(f[4]))
    assert f[4, feature] > 0
    record: dict = {}
    res = steer(lm, tok, sae, layer, SEQ, {"clamp": [Clamp(feature, value, positions)]},
                units="raw", record=record)
    torch.testing.assert_close(record["h"], hidden, rtol=0, atol=0)
    f_i = f[:, feature]
    delta = (record["h_new"] - record["h"])[0].double().numpy()
    for pos in range(len(SEQ)):
        expected = (value - f_i[pos + 1]) * p["W_dec"][feature] if pos in positions else 0.0
        np.testing.assert_allclose(delta[pos + 1], expected, atol=1e-5)
    assert np.all(delta[[0, len(SEQ) + 1]] == 0)  # <cls>, <eos> untouched
    assert not np.allclose(res.probs[0], steer(lm, tok, sae, layer, SEQ, {"n": []}).probs[0])


def test_normalized_units_divide_by_scale(lm_tok):
    lm, tok = lm_tok
    saved = _sae_for(lm, seed=4)
    sae = TorchSAE.from_saved(saved)
    feature = int(np.argmax(saved.params["scale"]))
    s = float(saved.params["scale"][feature])
    rec_n, rec_r = {}, {}
    a = steer(lm, tok, sae, 3, SEQ, {"c": [Clamp(feature, 1.0)]}, record=rec_n)
    b = steer(lm, tok, sae, 3, SEQ, {"c": [Clamp(feature, 1.0 / s)]}, units="raw", record=rec_r)
    torch.testing.assert_close(rec_n["h_new"], rec_r["h_new"])
    np.testing.assert_allclose(a.probs, b.probs, atol=1e-6)
    dead = int(np.flatnonzero(saved.params["scale"] == 0)[0])
    with pytest.raises(InputError, match="never active"):
        steer(lm, tok, sae, 3, SEQ, {"c": [Clamp(dead, 1.0)]})


def test_steering_sweep_and_bad_input(lm_tok):
    lm, tok = lm_tok
    sae = TorchSAE.from_saved(_sae_for(lm))
    res = steer(lm, tok, sae, 2, SEQ, clamp_sweep(70, [0.0, 1.0, 5.0], positions=[2]), batch_size=2)
    assert res.names == ("unsteered", "f70=0", "f70=1", "f70=5")
    assert res.probs.shape == (4, len(SEQ), lm.config.vocab_size)
    np.testing.assert_allclose(res.probs.sum(-1), 1.0, atol=1e-5)
    assert res.aa_probs("AK").shape == (4, len(SEQ), 2)
    # only position 2's clamp: positions before it are unaffected? no (attention mixes); the
    # clamped position itself must change with the value
    assert not np.allclose(res.probs[1, 2], res.probs[3, 2])
    with pytest.raises(InputError, match="out of range"):
        steer(lm, tok, sae, 2, SEQ, {"c": [Clamp(10_000, 1.0)]})
    with pytest.raises(InputError, match="outside the sequence"):
        steer(lm, tok, sae, 2, SEQ, {"c": [Clamp(1, 1.0, (len(SEQ),))]})
    with pytest.raises(InputError, match="layers 1..4"):
        steer(lm, tok, sae, 5, SEQ, {"c": []})


def _identity_sae(d: int) -> TorchSAE:
    """x -> x exactly: ReLU SAE with W_enc = [I, -I], W_dec = [I; -I] (ReLU(x) - ReLU(-x))."""
    eye = np.eye(d, dtype=np.float32)
    params = {"b_pre": np.zeros(d, np.float32), "W_enc": np.concatenate([eye, -eye], 1),
              "b_enc": np.zeros(2 * d, np.float32), "W_dec": np.concatenate([eye, -eye], 0),
              "scale": np.ones(2 * d, np.float32)}
    return TorchSAE("relu", params)


def _zero_sae(d: int) -> TorchSAE:
    """Reconstructs 0 everywhere: never fires, b_pre = 0."""
    params = {"b_pre": np.zeros(d, np.float32), "W_enc": np.zeros((d, 4), np.float32),
              "b_enc": -np.ones(4, np.float32), "W_dec": np.zeros((4, d), np.float32),
              "scale": np.ones(4, np.float32)}
    return TorchSAE("relu", params)


def _ce_reference(lm, tok, seqs, layer, recon_fn):
    """Per-protein CE over residues with a forward hook splice (no nnsight), mean over proteins."""
    out = []
    if lm.config.model_type == "esm":
        blocks, final_norm = lm.esm.encoder.layer, lm.esm.encoder.emb_layer_norm_after
    else:
        blocks, final_norm = lm.esmc.layers, lm.esmc.norm
    target = blocks[layer - 1] if layer < len(blocks) else final_norm
    handle = target.register_forward_hook(lambda m, a, o: recon_fn(o)) if recon_fn else None
    try:
        for s in seqs:
            ids, attn = tokenize(tok, [s])
            with torch.no_grad():
                logp = torch.log_softmax(lm(ids, attention_mask=attn).logits[0].double(), -1)
            out.append(-np.mean([logp[i, ids[0, i]].item() for i in range(1, len(s) + 1)]))
    finally:
        if handle:
            handle.remove()
    return float(np.mean(out))


@pytest.mark.parametrize("layer", [2, 4])
def test_loss_recovered_is_one_for_identity_and_zero_for_zero_ablation(lm_tok, layer):
    lm, tok = lm_tok
    d = lm.config.hidden_size
    rows = fidelity_table(lm, tok, PROTEINS, layer,
                          {"identity": _identity_sae(d), "zero": _zero_sae(d),
                           "random": TorchSAE.from_saved(_sae_for(lm))}, batch_size=2)
    by = {r.sae_id: r for r in rows}
    assert by["identity"].loss_recovered == pytest.approx(1.0, abs=1e-5)
    assert by["zero"].loss_recovered == pytest.approx(0.0, abs=1e-5)
    assert by["identity"].pct_loss_recovered == pytest.approx(100.0, abs=1e-3)
    # CE numbers against a hook-based, one-protein-at-a-time computation (unpadded)
    assert by["random"].ce_clean == pytest.approx(_ce_reference(lm, tok, PROTEINS, layer, None), abs=1e-4)
    assert by["random"].ce_zero == pytest.approx(
        _ce_reference(lm, tok, PROTEINS, layer, torch.zeros_like), abs=1e-4)


def test_fidelity_with_masking(lm_tok):
    lm, tok = lm_tok
    d = lm.config.hidden_size
    rows = fidelity_table(lm, tok, PROTEINS, 3, {"identity": _identity_sae(d)},
                          mask_fraction=0.15, seed=1)
    plain = fidelity_table(lm, tok, PROTEINS, 3, {"identity": _identity_sae(d)})
    assert rows[0].loss_recovered == pytest.approx(1.0, abs=1e-5)
    assert rows[0].ce_clean != pytest.approx(plain[0].ce_clean)


@pytest.mark.parametrize("layer", [1, 3, 4])
def test_splice_with_the_blocks_before_it_skipped_gives_the_full_forwards_logits(lm_tok, layer):
    lm, tok = lm_tok
    ids, attn = tokenize(tok, PROTEINS)
    _, hidden = clean_forward(lm, ids, attn, layer)
    new = hidden * 0.5 + 0.25
    nn_model = wrap(lm)
    torch.testing.assert_close(logits_with_hidden(nn_model, ids, attn, layer, new),
                               logits_with_edit(nn_model, ids, attn, layer, lambda h: new), rtol=0, atol=0)


def test_several_layers_at_once_and_masks_independent_of_batching(lm_tok):
    lm, tok = lm_tok
    saes = {L: {"random": TorchSAE.from_saved(_sae_for(lm, seed=L))} for L in (2, 4)}
    together = fidelity_tables(lm, tok, PROTEINS, saes, batch_size=2)
    for L in saes:
        assert together[L] == fidelity_table(lm, tok, PROTEINS, L, saes[L], batch_size=2)
    # each protein's masked positions are drawn in input order, whatever the batches
    one, three = (fidelity_table(lm, tok, PROTEINS, 2, saes[2], batch_size=b, mask_fraction=0.3, seed=2)[0]
                  for b in (1, 3))
    assert one.ce_clean == pytest.approx(three.ce_clean, abs=1e-5)
    assert one.ce_sae == pytest.approx(three.ce_sae, abs=1e-5)


def test_loss_recovered_formula():
    assert loss_recovered(2.0, 1.0, 3.0) == pytest.approx(0.5)
    assert pct_loss_recovered(4.0, 1.0, 3.0) == 0.0  # clipped as the reference
    assert np.isnan(loss_recovered(2.0, 1.0, 1.0)) and pct_loss_recovered(2.0, 1.0, 1.0) == 0.0
