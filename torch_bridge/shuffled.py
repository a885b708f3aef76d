"""The shuffled-weight ESM-2 baseline (DESIGN.md Q6).

Every parameter tensor of the model (each weight and bias: embeddings, attention and MLP
projections, layer norms, the language-model head) independently has its values permuted by a
seeded permutation over all of its elements; shapes, buffers (rotary frequencies) and the
tokenizer are unchanged. The result keeps each tensor's value distribution and destroys all
learned structure. Tied tensors (the LM head's decoder shares the token embeddings) are one
parameter and are permuted once, so they stay tied.
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from interplm_jax.atomic import atomic_dir
from interplm_jax.errors import InputError
from torch_bridge.intervene import load_masked_lm

log = logging.getLogger(__name__)


def permutation_for(name: str, numel: int, seed: int) -> np.ndarray:
    """The permutation applied to the flattened parameter ``name`` (seeded by seed and name)."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())]).permutation(numel)


@torch.no_grad()
def shuffle_parameters(model: torch.nn.Module, seed: int) -> list[str]:
    """Permute the values of every parameter of ``model`` in place; return the names shuffled."""
    names = []
    for name, p in model.named_parameters():  # tied parameters are listed once
        flat = p.data.reshape(-1)
        perm = torch.from_numpy(permutation_for(name, flat.numel(), seed))
        p.data.copy_(flat[perm].reshape(p.shape))
        names.append(name)
    return names


def save_shuffled_esm(source: str | os.PathLike, out: str | os.PathLike, seed: int = 0) -> Path:
    """Load ESM-2 (hub name or local path), shuffle its weights, save model + tokenizer to ``out``.

    ``out`` then loads with ``from_pretrained`` like any ESM-2, so the same extraction, training
    and evaluation run on it. ``out/shuffle.json`` records the source, seed and tensors shuffled.
    """
    out = Path(out)
    if out.exists():
        raise InputError(f"{out}: already exists; choose a new directory for the shuffled model")
    model, tokenizer = load_masked_lm(source)
    names = shuffle_parameters(model, seed)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "shuffle.json").write_text(json.dumps(
            {"source": os.fspath(source), "seed": seed, "shuffled_tensors": names}, indent=1) + "\n")
    log.info("saved shuffled-weight copy of %s (seed %d, %d tensors) to %s", source, seed, len(names), out)
    return out
