"""Extraction into the store: values against direct forward passes, batching, resume, workers."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from interplm_jax.errors import InputError, LockedError, StoreError
from interplm_jax.fasta import Protein, write_fasta
from interplm_jax.store import ActivationStore, StoreWriter
from torch_bridge import esm as esm_mod
from torch_bridge.esm import ResidueTokenizer, extract_to_store, token_budget_batches
from torch_bridge.models import load_model

REPO = Path(__file__).resolve().parents[1]
AA = "ACDEFGHIKLMNPQRSTVWY"


def random_proteins(n, seed=0, lo=3, hi=200):
    rng = np.random.default_rng(seed)
    return [Protein(f"prot{i}", "".join(rng.choice(list(AA), size=int(rng.integers(lo, hi)))))
            for i in range(n)]


def store_bytes(path: Path) -> dict[str, bytes]:
    """Every file of a store; the manifest without its creation time."""
    files = {}
    for f in sorted(path.rglob("*")):
        if f.is_file():
            data = f.read_bytes()
            if f.name == "manifest.json":
                m = json.loads(data)
                m.pop("created")
                data = json.dumps(m, sort_keys=True).encode()
            files[str(f.relative_to(path))] = data
    return files


@pytest.fixture(scope="module")
def proteins():
    # very different lengths in one batch: 3 .. 400 residues, plus extremes
    ps = random_proteins(23, lo=3, hi=400)
    return ps + [Protein("tiny", "M"), Protein("big", "W" * 500)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_esm, proteins):
    out = tmp_path_factory.mktemp("ref") / "store"
    store = extract_to_store(proteins, tiny_esm, [1, 2, 4], out, shard_size=7, max_tokens=900)
    return out, store


def test_store_equals_direct_forward_of_each_protein_alone(tiny_esm, proteins, reference):
    from transformers import AutoTokenizer, EsmModel

    _, store = reference
    model = EsmModel.from_pretrained(tiny_esm, add_pooling_layer=False).eval()
    tok = AutoTokenizer.from_pretrained(tiny_esm)
    assert store.n_shards == 4 and store.layers == (1, 2, 4)
    for p in proteins:
        with torch.no_grad():
            hs = model(**tok(p.sequence, return_tensors="pt"), output_hidden_states=True).hidden_states
        for L in store.layers:
            expected = hs[L][0, 1:-1].numpy()  # drop <cls> and <eos>
            np.testing.assert_allclose(store.protein(p.id, L), expected, rtol=1e-4, atol=1e-5)
    assert store.n_tokens == sum(len(p.sequence) for p in proteins)


def test_layer_L_is_the_output_of_block_L_and_the_last_gets_the_final_norm(tiny_esm, proteins,
                                                                           reference):
    """DESIGN.md: hidden_states[L] is esm.encoder.layer[L-1]'s output, except that the last
    entry has emb_layer_norm_after applied."""
    _, store = reference
    model, tok, _ = load_model(tiny_esm)
    captured = {}
    for i, block in enumerate(model.encoder.layer):
        block.register_forward_hook(lambda m, a, out, i=i: captured.__setitem__(i + 1, out))
    p = proteins[0]
    with torch.no_grad():
        model(**tok(p.sequence, return_tensors="pt"))
        last = model.encoder.emb_layer_norm_after(captured[4])
    out = lambda t: (t[0] if isinstance(t, tuple) else t)[0, 1:-1].numpy()  # noqa: E731
    for L, expected in ((1, out(captured[1])), (2, out(captured[2])), (4, out(last))):
        np.testing.assert_allclose(store.protein(p.id, L), expected, rtol=1e-4, atol=1e-5)
    assert np.abs(store.protein(p.id, 4) - out(captured[4])).max() > 0.1


def test_vectorized_tokenizer_equals_hf_tokenizer(tiny_esm):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_esm)
    seqs = ["MKV", "ACDEFGHIKLMNPQRSTVWYXBUZO", "W"]
    expected = tok(seqs, padding=True, return_tensors="np")["input_ids"]
    np.testing.assert_array_equal(ResidueTokenizer(tok)(seqs), expected)


def test_token_budget_batches():
    rng = np.random.default_rng(0)
    lengths = list(rng.integers(1, 1000, size=300)) + [5000]
    batches = token_budget_batches(lengths, 4096)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) == 1 or len(b) * (max(lengths[i] for i in b) + 2) <= 4096
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(flat, reverse=True)
    padded = sum(len(b) * (max(lengths[i] for i in b) + 2) for b in batches)
    assert padded < 1.1 * sum(n + 2 for n in lengths)  # little padding waste


def test_layer_out_of_range(tiny_esm, tmp_path):
    with pytest.raises(InputError, match=r"layers \[5\] out of range"):
        extract_to_store(random_proteins(2), tiny_esm, [1, 5], tmp_path / "s")


def test_resume_after_kill_between_data_and_marker_is_byte_identical(
        tiny_esm, proteins, reference, tmp_path, monkeypatch):
    ref_path, _ = reference
    out = tmp_path / "store"
    real_write_json = StoreWriter.write_shard

    def dying_write_shard(self, shard, acts):
        if shard.index == 2:
            # half the layers written, then "killed": no marker
            first = next(iter(self.arrays))
            self.arrays[first][shard.row_start:shard.row_stop].write(acts[first]).result()
            raise KeyboardInterrupt("simulated kill")
        return real_write_json(self, shard, acts)

    monkeypatch.setattr(StoreWriter, "write_shard", dying_write_shard)
    with pytest.raises(KeyboardInterrupt):
        extract_to_store(proteins, tiny_esm, [1, 2, 4], out, shard_size=7, max_tokens=900)
    with pytest.raises(StoreError, match="incomplete store, 2 of 4 shards"):
        ActivationStore.open(out)
    monkeypatch.setattr(StoreWriter, "write_shard", real_write_json)
    calls = []
    monkeypatch.setattr(esm_mod, "embed_shard", lambda *a, **k: calls.append(1) or
                        _real_embed_shard(*a, **k))
    extract_to_store(proteins, tiny_esm, [1, 2, 4], out, shard_size=7, max_tokens=900)
    assert len(calls) == 2  # only shards 2 and 3 recomputed
    assert store_bytes(out) == store_bytes(ref_path)


_real_embed_shard = esm_mod.embed_shard


def test_kill_9_mid_extraction_then_resume_is_byte_identical(tiny_esm, tmp_path):
    proteins = random_proteins(40, seed=3, lo=20, hi=200)
    fasta = tmp_path / "p.fasta"
    write_fasta(fasta, proteins)
    cmd = [sys.executable, str(REPO / "scripts" / "extract.py"), "--fasta", str(fasta),
           "--model", str(tiny_esm), "--layers", "1,3", "--shard-size", "4", "--max-tokens", "400"]
    env = {**os.environ, "INTERPLM_PROGRESS": "0"}
    subprocess.run(cmd + ["--out", str(tmp_path / "whole")], check=True, env=env, capture_output=True)
    proc = subprocess.Popen(cmd + ["--out", str(tmp_path / "killed")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = tmp_path / "killed" / "shards" / "000002.done"
    deadline = time.time() + 120
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_done = len(list((tmp_path / "killed" / "shards").glob("*.done")))
    assert 3 <= n_done < 10, "the kill should land mid-extraction"
    subprocess.run(cmd + ["--out", str(tmp_path / "killed")], check=True, env=env, capture_output=True)
    assert store_bytes(tmp_path / "killed") == store_bytes(tmp_path / "whole")


def test_parallel_workers_build_the_same_store(tiny_esm, proteins, reference, tmp_path):
    ref_path, _ = reference
    out = tmp_path / "store"
    kw = dict(shard_size=7, max_tokens=900)
    assert extract_to_store(proteins, tiny_esm, [1, 2, 4], out, worker=(1, 3), **kw) is None
    assert extract_to_store(proteins, tiny_esm, [1, 2, 4], out, worker=(0, 3), **kw) is None
    store = extract_to_store(proteins, tiny_esm, [1, 2, 4], out, worker=(2, 3), **kw)
    assert store is not None and store.manifest["complete"]
    assert store_bytes(out) == store_bytes(ref_path)


def test_a_worker_already_writing_a_store_is_not_run_twice(tiny_esm, proteins, tmp_path):
    from interplm_jax.lock import locked

    out = tmp_path / "store"
    with locked(out, ".lock-worker-1-of-2", "extraction worker 1/2"):  # as another process would
        with pytest.raises(LockedError, match=rf"store: extraction worker 1/2 is already running "
                                              rf"here \(process {os.getpid()} on "):
            extract_to_store(proteins[:3], tiny_esm, [1], out, shard_size=7, worker=(1, 2))
        assert extract_to_store(proteins[:3], tiny_esm, [1], out, shard_size=7, worker=(0, 2))
    assert not list(out.glob(".lock*"))  # a finished store holds no lock files


def test_resume_with_other_weights_or_plan_is_refused(tiny_esm, proteins, reference, tmp_path):
    from torch_bridge.tiny_esm import build_tiny_esm

    ref_path, _ = reference
    other = build_tiny_esm(tmp_path / "other", seed=1)
    with pytest.raises(StoreError, match="written by model weights"):
        extract_to_store(proteins, other, [1, 2, 4], ref_path, shard_size=7)
    with pytest.raises(StoreError, match="existing store has layers"):
        extract_to_store(proteins, tiny_esm, [1, 2], ref_path, shard_size=7)
    with pytest.raises(StoreError, match="existing store has ids_crc32"):
        extract_to_store(proteins[::-1], tiny_esm, [1, 2, 4], ref_path, shard_size=7)


def test_same_ids_and_lengths_with_other_residues_is_refused(tiny_esm, proteins, reference):
    """A FASTA edited in place (same ids, same lengths): refused, never resumed as stale."""
    ref_path, _ = reference
    edited = list(proteins)
    p = edited[9]  # shard 1 of 7-protein shards
    edited[9] = Protein(p.id, ("A" if p.sequence[0] != "A" else "C") + p.sequence[1:])
    with pytest.raises(StoreError, match=r"shard 1 \(proteins 7..13, from 'prot7'\) holds other sequences"):
        extract_to_store(edited, tiny_esm, [1, 2, 4], ref_path, shard_size=7)


@pytest.mark.parametrize("size", ["-5", "0"])
def test_extract_cli_refuses_a_bad_shard_size_and_writes_nothing(tiny_esm, tmp_path, size):
    from click.testing import CliRunner

    from interplm_jax.cli import load_script

    fasta = tmp_path / "p.fa"
    fasta.write_text(">a\nMKV\n")
    r = CliRunner().invoke(load_script(REPO / "scripts" / "extract.py").main, [
        "--fasta", str(fasta), "--model", str(tiny_esm), "--layers", "1", "--out",
        str(tmp_path / "s"), "--shard-size", size])
    assert r.exit_code == 2 and "--shard-size: shard_size, max_tokens and max_length must be positive" in r.output
    assert not (tmp_path / "s").exists()


def test_extract_cli_reports_bad_fasta_with_exit_2(tiny_esm, tmp_path):
    fasta = tmp_path / "bad.fa"
    fasta.write_text(">a\nMKV\n>b\nMK#V\n")
    cmd = [sys.executable, str(REPO / "scripts" / "extract.py"), "--fasta", str(fasta),
           "--model", str(tiny_esm), "--layers", "1", "--out", str(tmp_path / "s")]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 2
    assert "bad.fa:3: protein 'b': invalid characters: '#'" in r.stderr
    assert not (tmp_path / "s").exists()
    r = subprocess.run(cmd + ["--on-invalid", "skip"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "skipped 1 invalid record(s): {'invalid characters': 1}" in r.stderr
    assert ActivationStore.open(tmp_path / "s").protein_ids == ["a"]
