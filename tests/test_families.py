"""Model families (torch_bridge/models.py): ESM C beside ESM-2, strict loading, module paths."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from interplm_jax.errors import InputError
from interplm_jax.fasta import Protein
from interplm_jax.store import ActivationStore
from torch_bridge.esm import ResidueTokenizer, extract_to_store, weights_sha256
from torch_bridge.models import (detect_family, hook_name, hook_name_of, load_masked_lm, load_model,
                                 random_init, save_random_init, submodule)
from torch_bridge.shuffled import save_shuffled_esm
from torch_bridge.tiny_esm import build_tiny_esmc

PROTEINS = [Protein("a", "MKTAYIAKQRQISFVKSHFSRQ"), Protein("b", "GSHM"), Protein("c", "W"),
            Protein("d", "MSLEQKKGADIISKILQIQNSIGKTTSPSTLKTKLSEISRKEQENARIQSKLSDLQ")]


@pytest.fixture(scope="module")
def esmc_store(tmp_path_factory, tiny_esmc):
    out = tmp_path_factory.mktemp("esmc") / "store"
    return extract_to_store(PROTEINS, tiny_esmc, [1, 2, 4], out, shard_size=3, max_tokens=64)


def test_esmc_store_equals_a_direct_esmc_forward_of_each_protein(tiny_esmc, esmc_store):
    from transformers import AutoTokenizer, EsmcModel

    model = EsmcModel.from_pretrained(tiny_esmc).eval()
    tok = AutoTokenizer.from_pretrained(tiny_esmc)
    for p in PROTEINS:
        with torch.no_grad():
            hs = model(**tok(p.sequence, return_tensors="pt"), output_hidden_states=True).hidden_states
        assert len(hs) == 5
        for L in (1, 2, 4):
            np.testing.assert_allclose(esmc_store.protein(p.id, L), hs[L][0, 1:-1].numpy(),
                                       rtol=1e-4, atol=1e-5)


def test_esmc_layer_L_is_block_L_and_the_last_is_after_the_final_norm(tiny_esmc, esmc_store):
    model, tok, family = load_model(tiny_esmc)
    assert family.name == "esmc"
    captured = {}
    for i, block in enumerate(model.layers):
        block.register_forward_hook(lambda m, a, out, i=i: captured.__setitem__(i + 1, out))
    p = PROTEINS[0]
    with torch.no_grad():
        model(**tok(p.sequence, return_tensors="pt"))
        last = model.norm(captured[4])
    rows = lambda t: t[0, 1:-1].numpy()  # noqa: E731
    for L, expected in ((1, rows(captured[1])), (2, rows(captured[2])), (4, rows(last))):
        np.testing.assert_allclose(esmc_store.protein(p.id, L), expected, rtol=1e-4, atol=1e-5)
    assert np.abs(esmc_store.protein(p.id, 4) - rows(captured[4])).max() > 0.1


def test_manifest_records_family_name_and_layer_semantics(tiny_esmc, esmc_store):
    model = esmc_store.manifest["model"]
    assert model["model_family"] == "esmc" and model["name"] == str(tiny_esmc)
    assert model["n_layers"] == 4 and "esmc.norm" in model["layer_semantics"]
    assert model["weights_sha256"] == weights_sha256(load_model(tiny_esmc)[0])
    assert hook_name_of(model, 4) == "esmc.norm" and hook_name_of(model, 2) == "esmc.layers.1"
    assert hook_name_of({"name": "old", "n_layers": 6}, 6) == "esm.encoder.emb_layer_norm_after"


def test_vectorized_tokenizer_equals_the_esmc_tokenizer(tiny_esmc):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_esmc)
    seqs = ["MKV", "ACDEFGHIKLMNPQRSTVWYXBUZO", "W"]
    expected = tok(seqs, padding=True, return_tensors="np")["input_ids"]
    np.testing.assert_array_equal(ResidueTokenizer(tok)(seqs), expected)


@pytest.mark.parametrize("family, layer, n, expected", [
    ("esm2", 1, 6, "esm.encoder.layer.0"), ("esm2", 5, 6, "esm.encoder.layer.4"),
    ("esm2", 6, 6, "esm.encoder.emb_layer_norm_after"), ("esm2", 0, 6, "esm.embeddings"),
    ("esmc", 1, 30, "esmc.layers.0"), ("esmc", 29, 30, "esmc.layers.28"),
    ("esmc", 30, 30, "esmc.norm"), ("esmc", 0, 30, "esmc.embed_tokens")])
def test_hook_names(family, layer, n, expected):
    assert hook_name(family, layer, n) == expected


def test_hook_name_paths_exist_and_output_hidden_states(tiny_plm):
    """The module at hook_name(L) outputs hidden_states[L] of the masked LM, every L."""
    lm, tok = load_masked_lm(tiny_plm)
    family = detect_family(tiny_plm)
    n = lm.config.num_hidden_layers
    seen = {}
    for L in range(n + 1):
        submodule(lm, hook_name(family.name, L, n)).register_forward_hook(
            lambda m, a, out, L=L: seen.__setitem__(L, out[0] if isinstance(out, tuple) else out))
    with torch.no_grad():
        hs = lm(**tok(["MKTAYIAK"], return_tensors="pt"), output_hidden_states=True).hidden_states
    for L in range(n + 1):
        torch.testing.assert_close(seen[L], hs[L], rtol=0, atol=0)


def test_unknown_family_and_layer_are_refused():
    with pytest.raises(InputError, match=r"unknown model family 'esm3'; supported: esm2 .* esmc"):
        hook_name("esm3", 1, 4)
    with pytest.raises(InputError, match=r"layer 5 is out of range for esmc \(0..4"):
        hook_name("esmc", 5, 4)


def test_unsupported_model_type_is_refused_naming_the_families(tmp_path, tiny_esm):
    bert = tmp_path / "bert"
    shutil.copytree(tiny_esm, bert)
    config = json.loads((bert / "config.json").read_text())
    (bert / "config.json").write_text(json.dumps({**config, "model_type": "bert",
                                                  "architectures": ["BertForMaskedLM"]}))
    with pytest.raises(InputError, match=r"unsupported model type 'bert'; supported families: "
                                         r"esm2 \(model_type 'esm'\), esmc"):
        load_model(bert)
    with pytest.raises(InputError, match="unsupported model type 'bert'"):
        extract_to_store(PROTEINS, bert, [1], tmp_path / "store")


def test_esmc_weights_under_an_esm2_config_are_refused(tmp_path, tiny_esm, tiny_esmc):
    """The issue's silent failure: an ESM C checkpoint read as ESM-2 was random ESM-2 weights."""
    mixed = tmp_path / "mixed"
    shutil.copytree(tiny_esmc, mixed)
    shutil.copy(tiny_esm / "config.json", mixed / "config.json")
    with pytest.raises(InputError, match=r"do not all load into EsmModel \(they would be random\): "
                                         r"\d+ tensor\(s\) missing from the checkpoint: .*word_embeddings"):
        load_model(mixed)
    with pytest.raises(InputError, match="do not all load into EsmForMaskedLM"):
        load_masked_lm(mixed)
    assert not (tmp_path / "store").exists()
    with pytest.raises(InputError, match="do not all load"):
        extract_to_store(PROTEINS, mixed, [1], tmp_path / "store")
    assert not (tmp_path / "store").exists()


def test_a_checkpoint_missing_a_block_is_refused_naming_it(tmp_path, tiny_esmc):
    fewer = build_tiny_esmc(tmp_path / "three", num_layers=3)
    config = json.loads((fewer / "config.json").read_text())
    (fewer / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 4}))
    with pytest.raises(InputError, match=r"missing from the checkpoint: .*layers\.3\."):
        load_model(fewer)


def test_a_tensor_of_another_shape_is_refused(tmp_path):
    wide = build_tiny_esmc(tmp_path / "wide", hidden_size=32)
    config = json.loads((wide / "config.json").read_text())
    (wide / "config.json").write_text(json.dumps({**config, "intermediate_size": 64}))
    with pytest.raises(InputError, match="do not all load into EsmcModel"):
        load_model(wide)


def test_random_init_keeps_the_family_and_config_and_is_seeded(tiny_plm):
    source, _ = load_masked_lm(tiny_plm)
    a, tok = random_init(tiny_plm, seed=1)
    b, _ = random_init(tiny_plm, seed=1)
    c, _ = random_init(tiny_plm, seed=2)
    assert type(a) is type(source) and a.config.to_dict() == source.config.to_dict()
    assert weights_sha256(a) == weights_sha256(b) != weights_sha256(c)
    assert weights_sha256(a) != weights_sha256(source)
    for name, p in a.named_parameters():
        if p.ndim == 2 and p.numel() > 64:  # weight matrices are random, not constant
            assert p.std() > 0, name
    assert tok("MKV")["input_ids"] == [0, 20, 15, 7, 2]


def test_saved_random_init_loads_with_its_record_and_extracts(tmp_path, tiny_plm):
    """save_random_init (the study's random_init control) for either family: the directory loads
    strictly, holds random_init(source, seed)'s weights, records source, family and seed, and
    leaves the caller's torch random state alone."""
    torch.manual_seed(123)
    expect_next = torch.rand(3)
    torch.manual_seed(123)
    out = save_random_init(tiny_plm, tmp_path / "random_init", seed=7)
    assert torch.equal(torch.rand(3), expect_next)
    family = detect_family(tiny_plm).name
    assert json.loads((out / "random_init.json").read_text()) == {
        "source": str(tiny_plm), "family": family, "seed": 7}
    saved, _ = load_masked_lm(out)
    fresh, _ = random_init(tiny_plm, seed=7)
    assert weights_sha256(saved) == weights_sha256(fresh) != weights_sha256(load_masked_lm(tiny_plm)[0])
    store = extract_to_store(PROTEINS, out, [4], tmp_path / "store")
    assert store.manifest["model"]["model_family"] == family
    with pytest.raises(InputError, match="already exists"):
        save_random_init(tiny_plm, out, seed=7)


def test_shuffled_esmc_loads_and_extracts(tmp_path, tiny_esmc):
    out = save_shuffled_esm(tiny_esmc, tmp_path / "shuffled", seed=3)
    store = extract_to_store(PROTEINS, out, [4], tmp_path / "store")
    assert store.manifest["model"]["model_family"] == "esmc"
    orig = ActivationStore.open(extract_to_store(PROTEINS, tiny_esmc, [4], tmp_path / "orig").url)
    assert not np.allclose(store.protein("a", 4), orig.protein("a", 4))


def test_extraction_streams_statistics_equal_to_numpy_over_the_store(esmc_store):
    from interplm_jax.store.stats import load_stats

    for L in esmc_store.layers:
        s = load_stats(esmc_store, L)
        x = esmc_store.rows(L, 0, esmc_store.n_tokens).astype(np.float64)
        np.testing.assert_allclose(s.mean, x.mean(0), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(s.var, x.var(0), rtol=1e-6)
        assert s.norm_max == pytest.approx(np.linalg.norm(x, axis=1).max(), rel=1e-6)


def test_esmc_study_by_hand_extract_train_export_steer(tmp_path, tiny_esmc):
    """The stage scripts on a tiny ESM C: statistics shown, a centred SAE trained, its SAELens
    export hooked at ESM C's final norm, and steering runs on the export."""
    from click.testing import CliRunner

    from interplm_jax.cli import load_script
    from interplm_jax.fasta import write_fasta

    repo = Path(__file__).resolve().parents[1]

    def run(name, *args):
        r = CliRunner().invoke(load_script(repo / "scripts" / f"{name}.py").main,
                               [str(a) for a in args], catch_exceptions=False)
        assert r.exit_code == 0, r.output
        return r.output

    fasta = tmp_path / "p.fasta"
    write_fasta(fasta, PROTEINS)
    out = run("extract", "--fasta", fasta, "--model", tiny_esmc, "--layers", "2,4", "--out", tmp_path / "store")
    assert "layers: [2, 4]" in out
    n_tokens = sum(len(p.sequence) for p in PROTEINS)
    assert f"layer 4: {n_tokens} tokens" in run("inspect_store", tmp_path / "store")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  steps: 20\n  batch_size: 16\n  expansion: 2\n  layers: [4]\n"
                   "  grid: {lr: [1.0e-3]}\n  log_every: 10\n  checkpoint_every: 10\n"
                   "  input_center: true\n")
    run("train", "--config", cfg, "--store", tmp_path / "store", "--out", tmp_path / "runs")
    run("export", "--sweep", tmp_path / "runs" / "layer_4", "--format", "saelens", "--out", tmp_path / "exp")
    meta = json.loads((tmp_path / "exp" / "sae000" / "cfg.json").read_text())["metadata"]
    assert meta["hook_name"] == "esmc.norm" and meta["model_class_name"] == "EsmcForMaskedLM"
    run("steer", "--model", tiny_esmc, "--sae", tmp_path / "exp" / "sae000", "--layer", 4,
        "--feature", 0, "--value", "0,2", "--units", "raw", "--sequence", "MKTAYIAKQ",
        "--out", tmp_path / "steer.tsv")
    assert (tmp_path / "steer.tsv").read_text().splitlines()[1].startswith("unsteered")


def test_a_checkpoint_without_the_unused_contact_head_loads(tmp_path, tiny_esm):
    """ESM-2 checkpoints of some derived models (e.g. SaProt) have no contact-prediction head,
    which neither the hidden states nor the LM head use."""
    from safetensors.torch import load_file, save_file

    bare = tmp_path / "bare"
    shutil.copytree(tiny_esm, bare)
    weights = load_file(bare / "model.safetensors")
    dropped = [k for k in weights if "contact_head" in k]
    assert dropped
    save_file({k: v for k, v in weights.items() if k not in dropped}, bare / "model.safetensors",
              metadata={"format": "pt"})
    model, _, _ = load_model(bare)
    reference, _, _ = load_model(tiny_esm)
    ids = torch.tensor([[0, 20, 15, 7, 2]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).last_hidden_state, reference(ids).last_hidden_state)
    weights.pop(next(k for k in weights if "layer.1.attention.self.query.weight" in k))
    save_file(weights, bare / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(InputError, match=r"1 tensor\(s\) missing from the checkpoint: "
                                         r"encoder.layer.1.attention.self.query.weight"):
        load_model(bare)
