"""Extraction of protein LM hidden states (ESM-2, ESM C: torch_bridge/models.py) into a store.

``hidden_states[L]`` is the residual stream after layer ``L`` (``0`` = embeddings; transformers
applies the model's final norm to the last entry). We keep the residue rows only: no
``<cls>``, ``<eos>`` or padding rows.

Batches are formed within each shard by sorted length under a token budget (padded tokens per
batch), so that little compute goes to padding; a shard's batches depend only on its proteins, so
a resumed or parallel extraction writes exactly the bytes an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import time
from typing import Literal, Sequence

import numpy as np
import torch

from interplm_jax.config import option
from interplm_jax.errors import InputError
from interplm_jax.fasta import DEFAULT_MAX_LENGTH, Protein
from interplm_jax.lock import locked
from interplm_jax.paths import as_path
from interplm_jax.progress import progress_bar
from interplm_jax.store import ActivationStore, Shard, StoreWriter
from torch_bridge.models import Family, load_model

log = logging.getLogger(__name__)



@dataclasses.dataclass(frozen=True)
class ExtractConfig:
    """The ``extract:`` section of a study config (also the defaults of scripts/extract.py)."""

    model: str = option("facebook/esm2_t6_8M_UR50D",
                        "Hub name or local directory of an ESM-2 or ESM C checkpoint.")
    layers: tuple[int, ...] = option((1, 2, 3, 4, 5, 6), "Layers stored: hidden_states[L], 0 = embeddings.")
    max_length: int = option(DEFAULT_MAX_LENGTH, "Longest protein accepted (residues).")
    on_invalid: Literal["error", "skip"] = option("error", "Invalid FASTA records: 'error' (stop and report) or 'skip' (count).")
    shard_size: int = option(1000, "Proteins per shard: unit of resumption and of the training shuffle.")
    max_tokens: int = option(8192, "Token budget of one forward batch (padded tokens).")
    store_dtype: Literal["float32", "bfloat16"] = option("float32", "Stored dtype: float32 or bfloat16.")

    def __post_init__(self):
        if self.on_invalid not in ("error", "skip"):
            raise ValueError(f"on_invalid must be 'error' or 'skip', got {self.on_invalid!r}")
        if self.store_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"store_dtype must be float32 or bfloat16, got {self.store_dtype!r}")
        if self.shard_size < 1 or self.max_tokens < 1 or self.max_length < 1:
            raise ValueError("shard_size, max_tokens and max_length must be positive")


DEFAULT_MAX_TOKENS = ExtractConfig.max_tokens


def model_identity(name: str, model, family: Family) -> dict:
    """What a store manifest records of the model (``manifest["model"]``)."""
    n = model.config.num_hidden_layers
    return {"name": name, "model_family": family.name, "weights_sha256": weights_sha256(model),
            "n_layers": n, "hidden_size": model.config.hidden_size,
            "layer_semantics": (f"hidden_states[L] of {family.base_class}: 0 = embeddings, L = output of "
                       f"block L, {n} = after the final norm ({family.module_path(n, n)})")}


def weights_sha256(model: torch.nn.Module) -> str:
    """SHA-256 over the model's parameters and buffers (names, shapes, values), in name order."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class ResidueTokenizer:
    """Vectorized ESM-2 tokenization from the HF tokenizer's own vocabulary.

    ``<cls>`` + one token per residue + ``<eos>``, padded with ``<pad>``: the ids
    ``tokenizer(sequences, padding=True)`` gives for ESM-2's one-letter tokens, without the
    per-character Python work.
    """

    def __init__(self, tokenizer):
        self.table = np.full(256, tokenizer.unk_token_id, dtype=np.int64)
        for token, idx in tokenizer.get_vocab().items():
            if len(token) == 1:
                self.table[ord(token)] = idx
        self.cls, self.eos, self.pad = tokenizer.cls_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id

    def __call__(self, sequences: Sequence[str]) -> np.ndarray:
        """Token ids, shape (n_sequences, longest + 2)."""
        ids = np.full((len(sequences), max(len(s) for s in sequences) + 2), self.pad, dtype=np.int64)
        for i, s in enumerate(sequences):
            ids[i, 0] = self.cls
            ids[i, 1:len(s) + 1] = self.table[np.frombuffer(s.encode(), dtype=np.uint8)]
            ids[i, len(s) + 1] = self.eos
        return ids


def token_budget_batches(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Group indices into batches by descending length under a padded-token budget.

    A batch of sequences padded to its longest (``+2`` for ``<cls>``/``<eos>``) holds at most
    ``max_tokens`` tokens; a single sequence over the budget gets a batch of its own.
    Longest first, so memory peaks (and out-of-memory errors) show up at once.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    for i in order:
        if batches and (len(batches[-1]) + 1) * (lengths[batches[-1][0]] + 2) <= max_tokens:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def validate_layers(layers: Sequence[int], n_layers: int, name: str) -> None:
    bad = [L for L in layers if not 0 <= L <= n_layers]
    if bad:
        raise InputError(f"layers {bad} out of range for {name} (0..{n_layers}; 0 = embeddings)")


@torch.inference_mode()
def embed_batch(model, tokens: ResidueTokenizer, sequences: Sequence[str],
                layers: Sequence[int]) -> dict[int, list[np.ndarray]]:
    """Hidden states of a batch of sequences after each layer, residue rows only.

    Returns:
      layer -> list over sequences of float32 arrays (len(seq), d_model).
    """
    device = next(model.parameters()).device
    input_ids = torch.from_numpy(tokens(sequences)).to(device)
    out = model(input_ids=input_ids, attention_mask=(input_ids != tokens.pad).long(),
                output_hidden_states=True)
    result = {}
    for L in layers:
        h = out.hidden_states[L].float().cpu().numpy()
        result[L] = [h[i, 1:len(s) + 1] for i, s in enumerate(sequences)]
    return result


def embed_shard(model, tokens: ResidueTokenizer, proteins: Sequence[Protein], layers: Sequence[int],
                max_tokens: int, on_batch=None) -> dict[int, np.ndarray]:
    """Activations of a shard's proteins, rows in protein order: layer -> (n_rows, d_model)."""
    lengths = [len(p.sequence) for p in proteins]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    d = model.config.hidden_size
    out = {L: np.empty((offsets[-1], d), dtype=np.float32) for L in layers}
    for batch in token_budget_batches(lengths, max_tokens):
        acts = embed_batch(model, tokens, [proteins[i].sequence for i in batch], layers)
        for L in layers:
            for i, a in zip(batch, acts[L]):
                out[L][offsets[i]:offsets[i + 1]] = a
        if on_batch:
            on_batch(len(batch), sum(lengths[i] for i in batch))
    return out


def extract_to_store(proteins: Sequence[Protein], model: str | os.PathLike, layers: Sequence[int],
                     out: str | os.PathLike, shard_size: int = ExtractConfig.shard_size,
                     max_tokens: int = DEFAULT_MAX_TOKENS, worker: tuple[int, int] = (0, 1),
                     device: str | None = None, store_dtype: str = "float32",
                     model_dtype: torch.dtype = torch.float32) -> ActivationStore | None:
    """Extract ``hidden_states[L]`` of every protein for ``layers`` into the store at ``out``.

    Resumable: shards already marked complete are skipped. With ``worker=(i, n)`` only shards
    ``s`` with ``s % n == i`` are done here, so ``n`` processes can fill one store together.
    Each worker holds a lock in a local store while it writes: a second process with the same
    ``worker`` stops with a :class:`LockedError` naming the first.

    Returns:
      The opened store if it is complete after this call, else ``None`` (other workers pending).
    """
    i, n = worker
    with locked(as_path(out), f".lock-worker-{i}-of-{n}", f"extraction worker {i}/{n}"):
        return _extract_to_store(proteins, model, layers, out, shard_size, max_tokens, worker,
                                 device, store_dtype, model_dtype)


def _extract_to_store(proteins, model, layers, out, shard_size, max_tokens, worker, device,
                      store_dtype, model_dtype) -> ActivationStore | None:
    if not proteins:
        raise InputError("no proteins to extract")
    esm, tokenizer, family = load_model(model, device=device, dtype=model_dtype)
    layers = sorted(set(int(L) for L in layers))
    validate_layers(layers, esm.config.num_hidden_layers, os.fspath(model))
    identity = model_identity(os.fspath(model), esm, family)
    writer = StoreWriter.open(out, [p.id for p in proteins], [len(p.sequence) for p in proteins],
                              layers, esm.config.hidden_size, identity, shard_size=shard_size,
                              dtype=store_dtype, sequences=[p.sequence for p in proteins])
    pending: list[Shard] = writer.pending_shards(*worker)
    tokens = ResidueTokenizer(tokenizer)
    log.info("extracting layers %s of %s: %d shard(s) to do (worker %d/%d), device %s", layers,
             identity["name"], len(pending), worker[0], worker[1], next(esm.parameters()).device)
    bar = progress_bar(total=sum(s.n_rows for s in pending), desc="extract", unit="tok")
    n_prot, t0 = 0, time.perf_counter()

    def on_batch(n_seqs: int, n_tokens: int) -> None:
        nonlocal n_prot
        n_prot += n_seqs
        bar.update(n_tokens)
        bar.set_postfix(proteins_per_s=f"{n_prot / (time.perf_counter() - t0):.1f}")

    with bar:
        for shard in pending:
            acts = embed_shard(esm, tokens, proteins[shard.protein_start:shard.protein_stop],
                               layers, max_tokens, on_batch)
            writer.write_shard(shard, acts)
            log.debug("shard %d written (%d proteins)", shard.index, shard.protein_stop - shard.protein_start)
    if writer.finalize():
        return ActivationStore.open(out)
    return None
