"""Feature activations from an activation store through an encoder callable.

An *encoder* maps token rows to the normalized activations of the features being annotated:
``encode(x)`` with x an array (n, d_model) returns (n, K). :func:`sae_encoder` builds one from
SAE parameters (DESIGN.md section 2) restricted to K chosen features, so that annotating 10% of
the features costs 10% of the encoder's matrix product.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from interplm_jax.errors import InputError
from interplm_jax.progress import progress_bar

log = logging.getLogger(__name__)

Encoder = Callable[[np.ndarray], np.ndarray]
SAE_KEYS = ("b_pre", "W_enc", "b_enc", "W_dec", "scale")


def load_sae_params(path: str | Path) -> dict[str, np.ndarray]:
    """SAE leaves (b_pre, W_enc, b_enc, W_dec, scale) from a ``.npz`` or ``.safetensors`` file.

    ``scale`` defaults to ones when absent (an SAE not yet normalized).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: SAE file not found")
    if path.suffix == ".npz":
        with np.load(path) as z:
            params = {k: z[k] for k in z.files}
    elif path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        params = load_file(str(path))
    else:
        raise InputError(f"{path}: expected an .npz or .safetensors file of SAE parameters")
    missing = [k for k in SAE_KEYS[:4] if k not in params]
    if missing:
        raise InputError(f"{path}: missing SAE parameter(s) {missing}; found {sorted(params)}")
    params.setdefault("scale", np.ones(params["W_enc"].shape[1], np.float32))
    return params


@jax.jit
def _encode(x, b_pre, w, b, s):
    # x: (n, d); w: (d, K)
    return jax.nn.relu((x - b_pre) @ w + b) * s


def _bucket(n: int) -> int:
    """Rows padded to a power of two, at least 1,024 (one shape for every protein of ESM-2's
    1,022-residue limit): few shapes, so few compilations."""
    return max(1024, 1 << max(n - 1, 1).bit_length())


def sae_encoder(params: Mapping[str, np.ndarray], features: np.ndarray) -> Encoder:
    """Encoder of the ReLU SAE for ``features`` only: ReLU((x - b_pre) W_enc + b_enc) * scale."""
    feats = np.asarray(features)
    n_feat = params["W_enc"].shape[1]
    if feats.size and (feats.min() < 0 or feats.max() >= n_feat):
        raise InputError(f"feature index out of range for an SAE with {n_feat} features")
    leaves = (jnp.asarray(params["b_pre"], jnp.float32),
              jnp.asarray(np.asarray(params["W_enc"])[:, feats], jnp.float32),
              jnp.asarray(np.asarray(params["b_enc"])[feats], jnp.float32),
              jnp.asarray(np.asarray(params["scale"])[feats], jnp.float32))

    def encode(x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        padded = np.zeros((_bucket(n), x.shape[1]), np.float32)
        padded[:n] = x
        return np.asarray(_encode(padded, *leaves))[:n]

    return encode


def protein_max_activations(store, layer: int, encode: Encoder,
                            batch_rows: int = 32768) -> np.ndarray:
    """Each protein's maximum activation per feature: array (n_proteins, K).

    Reads the store shard by shard (``store.shard_bounds``, ``store.rows``) and reduces the
    encoded rows per protein with ``np.maximum.reduceat`` over the store's offsets.
    """
    offsets = np.asarray(store.offsets)
    out: np.ndarray | None = None
    with progress_bar(total=int(store.n_tokens), desc=f"max activations, layer {layer}",
                      unit="tok") as bar:
        for i in range(store.n_shards):
            p0, p1, r0, r1 = store.shard_bounds(i)
            acts = []
            for lo in range(r0, r1, batch_rows):
                hi = min(lo + batch_rows, r1)
                acts.append(encode(store.rows(layer, lo, hi)))
                bar.update(hi - lo)
            acts = np.concatenate(acts)
            if out is None:
                out = np.zeros((store.n_proteins, acts.shape[1]), np.float32)
            if np.any(np.diff(offsets[p0:p1 + 1]) <= 0):
                raise InputError(f"store shard {i}: a protein has no tokens")
            out[p0:p1] = np.maximum.reduceat(acts, offsets[p0:p1] - r0, axis=0)
    if out is None:
        raise InputError("the activation store holds no proteins")
    return out


def activated_positions(acts: np.ndarray, fraction: float, max_positions: int) -> np.ndarray:
    """0-based positions of a protein's activated residues for one feature, in sequence order.

    acts: vector (length,). A residue is activated when its activation is > 0 and at least
    ``fraction`` of the protein's maximum; only the ``max_positions`` strongest are kept.
    """
    acts = np.asarray(acts)
    top = acts.max(initial=0.0)
    if top <= 0:
        return np.zeros(0, np.int64)
    pos = np.flatnonzero(acts >= fraction * top)
    if pos.size > max_positions:
        strongest = np.argsort(-acts[pos], kind="stable")[:max_positions]
        pos = np.sort(pos[strongest])
    return pos


def positions_for_examples(store, layer: int, encode: Encoder, pairs: list[tuple[int, int]],
                           fraction: float, max_positions: int) -> dict[tuple[int, int], tuple]:
    """Activated positions and their count for (protein index, feature column) pairs.

    Each protein is read and encoded once. Returns {(p, k): (positions, n_activated)}.
    """
    by_protein: dict[int, list[int]] = {}
    for p, k in pairs:
        by_protein.setdefault(p, []).append(k)
    out = {}
    with progress_bar(total=len(by_protein), desc="activated residues", unit="protein") as bar:
        for p in sorted(by_protein):
            acts = encode(store.protein(p, layer))  # (length, K)
            for k in by_protein[p]:
                col = acts[:, k]
                top = col.max(initial=0.0)
                n_act = int(np.count_nonzero(col >= fraction * top)) if top > 0 else 0
                out[(p, k)] = (activated_positions(col, fraction, max_positions), n_act)
            bar.update(1)
    return out
