"""The shuffled-weight baseline (DESIGN.md Q6), for any supported family (ESM-2, ESM C).

Every parameter tensor of the model (each weight and bias: embeddings, attention and MLP
projections, layer norms, the language-model head) independently has its values permuted by a
seeded permutation over all of its elements; shapes, buffers (rotary frequencies) and the
tokenizer are unchanged. The result keeps each tensor's value distribution and destroys all
learned structure. Tied tensors (the LM head's decoder shares the token embeddings) are one
parameter and are permuted once, so they stay tied.
"""

from __future__ import annotations

import logging
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from torch_bridge.models import load_masked_lm, new_model_dir, save_variant

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
    """Load a masked LM (hub name or local path), shuffle its weights, save it to ``out``.

    ``out`` then loads with ``from_pretrained`` like its source, so the same extraction, training
    and evaluation run on it. ``out/shuffle.json`` records the source, seed and tensors shuffled.
    """
    out = new_model_dir(out)  # refuse an existing directory before loading a (possibly large) model
    model, tokenizer = load_masked_lm(source)
    names = shuffle_parameters(model, seed)
    save_variant(model, tokenizer, out, "shuffle.json",
                 {"source": os.fspath(source), "seed": seed, "shuffled_tensors": names})
    log.info("saved shuffled-weight copy of %s (seed %d, %d tensors) to %s", source, seed, len(names), out)
    return out
