"""The tiny ESM-2 fixture and the shuffled-weight baseline (ESM C: tests/test_families.py)."""

import json

import numpy as np
import pytest
import torch

from interplm_jax.errors import InputError
from torch_bridge.esm import weights_sha256
from torch_bridge.models import load_model
from torch_bridge.shuffled import permutation_for, save_shuffled_esm
from torch_bridge.tiny_esm import ESM2_VOCAB, build_tiny_esm


def test_tiny_esm_loads_through_from_pretrained_with_the_esm2_vocabulary(tiny_esm):
    model, tok = load_esm(tiny_esm)
    assert model.config.num_hidden_layers == 4 and model.config.hidden_size == 32
    assert [tok.convert_ids_to_tokens(i) for i in range(33)] == list(ESM2_VOCAB)
    assert tok("MKV")["input_ids"] == [0, 20, 15, 7, 2]
    assert model.config.position_embedding_type == "rotary"


def test_tiny_esm_is_reproducible(tmp_path, tiny_esm):
    again = build_tiny_esm(tmp_path / "again")
    assert weights_sha256(load_esm(again)[0]) == weights_sha256(load_esm(tiny_esm)[0])
    other = build_tiny_esm(tmp_path / "other", seed=1)
    assert weights_sha256(load_esm(other)[0]) != weights_sha256(load_esm(tiny_esm)[0])


def load_esm(path):
    return load_model(path)[:2]


def test_loading_a_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="cannot load a model config from .*nothing-here"):
        load_esm(tmp_path / "nothing-here")


def test_shuffled_model_permutes_every_parameter_within_its_tensor(tmp_path, tiny_esm):
    from transformers import EsmForMaskedLM

    out = save_shuffled_esm(tiny_esm, tmp_path / "shuffled", seed=7)
    orig = EsmForMaskedLM.from_pretrained(tiny_esm)
    shuf = EsmForMaskedLM.from_pretrained(out)
    record = json.loads((out / "shuffle.json").read_text())
    assert record["seed"] == 7
    orig_params = dict(orig.named_parameters())
    assert sorted(record["shuffled_tensors"]) == sorted(orig_params)
    for name, p in shuf.named_parameters():
        a, b = orig_params[name].detach().reshape(-1).numpy(), p.detach().reshape(-1).numpy()
        np.testing.assert_array_equal(b, a[permutation_for(name, a.size, 7)])  # exactly that permutation
        if a.size > 10 and len(np.unique(a)) > 1:
            assert not np.array_equal(a, b)
    # buffers (rotary frequencies) and the tokenizer are untouched; the LM head stays tied
    for name, buf in shuf.named_buffers():
        torch.testing.assert_close(buf, dict(orig.named_buffers())[name])
    assert shuf.lm_head.decoder.weight.data_ptr() == shuf.esm.embeddings.word_embeddings.weight.data_ptr()
    assert (out / "vocab.txt").read_text() == (tiny_esm / "vocab.txt").read_text()
    with pytest.raises(InputError, match="already exists"):
        save_shuffled_esm(tiny_esm, out)


def test_same_seed_same_shuffle(tmp_path, tiny_esm):
    a = save_shuffled_esm(tiny_esm, tmp_path / "a", seed=3)
    b = save_shuffled_esm(tiny_esm, tmp_path / "b", seed=3)
    assert weights_sha256(load_esm(a)[0]) == weights_sha256(load_esm(b)[0])
