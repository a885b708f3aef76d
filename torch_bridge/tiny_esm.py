"""A tiny ESM-2 and a tiny ESM C built locally, for tests and the demo (nothing is downloaded).

Each has its family's real architecture (ESM-2: rotary embeddings, pre-LayerNorm blocks, the
final ``emb_layer_norm_after``; ESM C: QK-LayerNorm attention, SwiGLU MLPs, residual scaling,
the final ``norm``), the family's real vocabulary and tokenizer files, random weights (seeded),
and is saved with ``save_pretrained`` so that it loads through exactly the ``from_pretrained``
path a hub name such as ``facebook/esm2_t6_8M_UR50D`` or ``biohub/ESMC-300M`` takes.
"""

from __future__ import annotations

import os
from pathlib import Path

from interplm_jax.atomic import atomic_dir

#: ESM-2's vocabulary in token-id order (fair-esm's ``Alphabet`` for ESM-2, as on the hub).
ESM2_VOCAB = (
    "<cls>", "<pad>", "<eos>", "<unk>",
    "L", "A", "G", "V", "S", "E", "R", "T", "I", "D", "P", "K", "Q", "N", "F", "Y", "M",
    "H", "W", "C", "X", "B", "U", "Z", "O", ".", "-", "<null_1>", "<mask>",
)


def build_tiny_esm(path: str | os.PathLike, num_layers: int = 4, hidden_size: int = 32,
                   num_heads: int = 4, seed: int = 0, overwrite: bool = False) -> Path:
    """Build, save and return the directory of a tiny ``EsmForMaskedLM`` and its tokenizer.

    Args:
      path: directory to create (left alone if it already holds a model, unless ``overwrite``).
      num_layers, hidden_size, num_heads: architecture (intermediate size is 4 x hidden).
      seed: torch seed for the random weights; the same seed gives the same files.
    Returns:
      ``path``, loadable with ``EsmModel.from_pretrained`` / ``AutoTokenizer.from_pretrained``.
    """
    from transformers import EsmConfig, EsmForMaskedLM, EsmTokenizer

    path = Path(path)
    if (path / "config.json").exists() and not overwrite:
        return path
    with atomic_dir(path) as tmp:
        vocab = tmp / "vocab.txt"
        vocab.write_text("\n".join(ESM2_VOCAB) + "\n")
        tokenizer = EsmTokenizer(vocab_file=str(vocab))
        config = EsmConfig(
            vocab_size=len(ESM2_VOCAB), hidden_size=hidden_size, num_hidden_layers=num_layers,
            num_attention_heads=num_heads, intermediate_size=4 * hidden_size,
            max_position_embeddings=1026, position_embedding_type="rotary",
            emb_layer_norm_before=False, token_dropout=True, layer_norm_eps=1e-5,
            pad_token_id=ESM2_VOCAB.index("<pad>"), mask_token_id=ESM2_VOCAB.index("<mask>"),
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        )
        _save_random(lambda: EsmForMaskedLM(config), tokenizer, tmp, seed)
    return path


def build_tiny_esmc(path: str | os.PathLike, num_layers: int = 4, hidden_size: int = 32,
                    num_heads: int = 4, seed: int = 0, overwrite: bool = False) -> Path:
    """Build, save and return the directory of a tiny ``EsmcForMaskedLM`` and its tokenizer.

    Arguments as :func:`build_tiny_esm`; the MLP's intermediate size is 3 x hidden (ESM C's
    SwiGLU ratio is about 8/3), the vocabulary ESM C's 33 tokens in a 64-row embedding.
    """
    from transformers import EsmcConfig, EsmcForMaskedLM, EsmcTokenizer

    path = Path(path)
    if (path / "config.json").exists() and not overwrite:
        return path
    with atomic_dir(path) as tmp:
        config = EsmcConfig(vocab_size=64, hidden_size=hidden_size, num_hidden_layers=num_layers,
                            num_attention_heads=num_heads, intermediate_size=3 * hidden_size,
                            max_position_embeddings=2048)
        _save_random(lambda: EsmcForMaskedLM(config), EsmcTokenizer(), tmp, seed)
    return path


def _save_random(make_model, tokenizer, out: Path, seed: int) -> None:
    """``make_model()`` under ``torch.manual_seed(seed)``, its LayerNorm parameters made
    non-trivial (so a wrong layer or a skipped norm shows up in tests), saved with its tokenizer."""
    import torch

    torch.manual_seed(seed)
    model = make_model()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name.lower():
                p.add_(0.1 * torch.randn_like(p))
    model.eval().save_pretrained(out)
    tokenizer.save_pretrained(out)
