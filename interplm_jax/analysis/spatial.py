"""Sequential and structural clustering scores of feature activations, per (protein, feature).

For one feature on one protein with normalized activations a (L,) and C-alpha coordinates (L, 3):
``pos_max = argmax(a)``; sequential neighbours are the j with ``0 < |j - pos_max| <= window``,
structural neighbours the j != pos_max with ``|CA_j - CA_pos_max| <= radius``; a score is the
mean of ``a`` over a neighbour set; its null is the mean, over K permutations pi_k of the
protein's positions, of the mean of ``a[pi_k(j)]`` over the same neighbour positions j.

Everything is computed for a batch of proteins padded to a common length (pad and mask): the
maxima for all features at once, then the neighbour and permutation gathers at once for the
(protein, feature) pairs whose maximum exceeds the threshold (:class:`PairScores`);
:mod:`interplm_jax.analysis.stats` turns them into per-feature tests. The permutations of a
protein are seeded by (seed, protein id), so a pair's scores do not depend on which other
proteins or features share its batch.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
import zlib
from typing import Callable, Sequence

import numpy as np

from interplm_jax.errors import InputError
from interplm_jax.resume import load_npz

log = logging.getLogger(__name__)

FIELDS = ("protein", "feature", "max", "pos_max", "seq_obs", "seq_null", "struct_obs",
          "struct_null", "n_seq", "n_struct")


@dataclasses.dataclass
class PairScores:
    """Scores of the (protein, feature) pairs kept, each field an array of shape (E,).

    ``protein``: index into the protein list of the run; ``feature``: feature index;
    ``max``/``pos_max``: the maximum activation and its position (0-based);
    ``seq_obs``/``seq_null``, ``struct_obs``/``struct_null``: observed and null scores (NaN when
    the neighbour set is empty); ``n_seq``/``n_struct``: neighbour counts.
    """

    protein: np.ndarray
    feature: np.ndarray
    max: np.ndarray
    pos_max: np.ndarray
    seq_obs: np.ndarray
    seq_null: np.ndarray
    struct_obs: np.ndarray
    struct_null: np.ndarray
    n_seq: np.ndarray
    n_struct: np.ndarray

    @classmethod
    def concatenate(cls, parts: Sequence["PairScores"]) -> "PairScores":
        if not parts:
            return cls.empty()
        return cls(**{f: np.concatenate([getattr(p, f) for p in parts]) for f in FIELDS})

    @classmethod
    def empty(cls) -> "PairScores":
        ints = {"protein", "feature", "pos_max", "n_seq", "n_struct"}
        return cls(**{f: np.zeros(0, np.int64 if f in ints else np.float64) for f in FIELDS})

    def __len__(self) -> int:
        return len(self.feature)

    def to_dict(self) -> dict[str, np.ndarray]:
        return {f: getattr(self, f) for f in FIELDS}


def protein_permutations(protein_id: str, length: int, n: int, seed: int) -> np.ndarray:
    """``n`` seeded permutations of ``range(length)``, shape (n, length)."""
    rng = np.random.default_rng([seed, zlib.crc32(protein_id.encode())])
    return rng.permuted(np.tile(np.arange(length, dtype=np.int32), (n, 1)), axis=1)


def contact_lists(coords: np.ndarray, lengths: np.ndarray, radius: float) -> np.ndarray:
    """Structural neighbours of every residue, as padded index lists.

    Args:
      coords: (P, L, 3) C-alpha coordinates, padded beyond each protein's length.
      lengths: (P,) lengths.
    Returns:
      (P, L, M) int64: for residue i of protein p, the j != i with distance <= radius, in
      increasing order, then -1 (M = the largest neighbour count in the batch).
    """
    P, L, _ = coords.shape
    valid = np.arange(L)[None, :] < lengths[:, None]                       # (P, L)
    sq = np.zeros((P, L, L))
    for c in range(3):  # coordinate by coordinate: exact, and no (P, L, L, 3) temporary
        sq += np.square(coords[:, :, None, c] - coords[:, None, :, c])
    near = sq <= radius * radius                                           # (P, L, L)
    del sq
    near &= valid[:, :, None] & valid[:, None, :]
    near[:, np.arange(L), np.arange(L)] = False
    slot = np.cumsum(near, axis=2) - 1                                     # rank of j in row i
    M = max(int(near.sum(axis=2).max(initial=0)), 1)
    out = np.full((P, L, M), -1, np.int32)
    p, i, j = np.nonzero(near)
    out[p, i, slot[p, i, j]] = j
    return out


def _masked_mean(values: np.ndarray, ok: np.ndarray, count: np.ndarray) -> np.ndarray:
    total = np.where(ok, values, 0.0).sum(axis=-1, dtype=np.float64)
    return np.divide(total, count, out=np.full(total.shape, np.nan), where=count > 0)


def batch_scores(acts: np.ndarray, lengths: np.ndarray, contacts: np.ndarray, perms: np.ndarray,
                 window: int, threshold: float | None = None) -> dict[str, np.ndarray]:
    """Scores of the (protein, feature) pairs of a padded batch.

    Args:
      acts: (P, L, F) normalized activations, padded with -inf beyond each protein's length.
      lengths: (P,) protein lengths.
      contacts: (P, L, M) structural neighbour lists from :func:`contact_lists`.
      perms: (P, K, L) permutations; row k of protein p permutes ``range(lengths[p])`` in its
        first ``lengths[p]`` entries.
      window: sequential neighbourhood half-width.
      threshold: keep only the pairs whose maximum is above it (None: every pair).
    Returns:
      Arrays of shape (E,), one entry per pair kept in (protein, feature) order: protein (batch
      index), feature, max, pos_max, seq_obs, seq_null, struct_obs, struct_null, n_seq, n_struct.
    """
    P, L, F = acts.shape
    K = perms.shape[1]
    amax = acts.max(axis=1)                                                # (P, F)
    keep = np.ones((P, F), bool) if threshold is None else amax > threshold
    p, f = np.nonzero(keep)                                                # the E pairs
    # argmax only where needed, on contiguous rows (an argmax across axis 1 is slow)
    pm = acts[p[:, None], np.arange(L)[None, :], f[:, None]].argmax(axis=1)  # (E,)

    offsets = np.concatenate([np.arange(-window, 0), np.arange(1, window + 1)])
    seq_idx = pm[:, None] + offsets                                        # (E, W)
    seq_ok = (seq_idx >= 0) & (seq_idx < lengths[p][:, None])
    struct_idx = contacts[p, pm]                                           # (E, M)
    struct_ok = struct_idx >= 0
    idx = np.where(np.concatenate([seq_ok, struct_ok], axis=1),
                   np.concatenate([seq_idx, struct_idx], axis=1), 0)       # (E, W+M)
    W = seq_idx.shape[1]

    obs = acts[p[:, None], idx, f[:, None]]                                # (E, W+M)
    moved = perms[p[:, None, None], np.arange(K)[None, :, None], idx[:, None, :]]  # (E, K, W+M)
    null = acts[p[:, None, None], moved, f[:, None, None]]                 # (E, K, W+M)

    n_seq, n_struct = seq_ok.sum(axis=1), struct_ok.sum(axis=1)
    return dict(
        protein=p, feature=f, max=amax[p, f].astype(np.float64), pos_max=pm,
        seq_obs=_masked_mean(obs[:, :W], seq_ok, n_seq),
        struct_obs=_masked_mean(obs[:, W:], struct_ok, n_struct),
        seq_null=_masked_mean(null[..., :W], seq_ok[:, None], n_seq[:, None]).mean(axis=1),
        struct_null=_masked_mean(null[..., W:], struct_ok[:, None], n_struct[:, None]).mean(axis=1),
        n_seq=n_seq, n_struct=n_struct,
    )


def _pad(arrays: Sequence[np.ndarray], length: int, fill=0) -> np.ndarray:
    out = np.full((len(arrays), length) + arrays[0].shape[1:], fill, dtype=arrays[0].dtype)
    for i, a in enumerate(arrays):
        out[i, : len(a)] = a
    return out


def _batches(lengths: np.ndarray, budget: int) -> list[np.ndarray]:
    """Protein indices grouped, by increasing length, so that count x max(longest, 128) <= budget
    (the floor bounds the per-pair arrays of many short proteins)."""
    order = np.argsort(lengths, kind="stable")
    groups, current = [], []
    for i in order:
        if current and (len(current) + 1) * max(int(lengths[i]), 128) > budget:
            groups.append(np.array(current))
            current = []
        current.append(i)
    if current:
        groups.append(np.array(current))
    return groups


def collect_pairs(
    ids: Sequence[str],
    coords: Sequence[np.ndarray],
    load: Callable[[str], np.ndarray],
    features: Callable[[np.ndarray], np.ndarray],
    *,
    threshold: float,
    window: int,
    radius: float,
    n_permutations: int,
    seed: int,
    batch_tokens: int = 4096,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_key: str = "",
    checkpoint_seconds: float = 300.0,
) -> PairScores:
    """Scores of the (protein, feature) pairs whose maximum activation exceeds ``threshold``.

    Args:
      ids: protein ids; ``coords[i]`` (L_i, 3) are the C-alpha coordinates of ``ids[i]``.
      load: protein id -> its model activations (L_i, d) (e.g. ``store.protein(id, layer)``).
      features: activations (n, d) -> normalized feature activations (n, F), rows independent.
      batch_tokens: padded tokens per batch; peak memory <= about 15 x batch_tokens x F bytes.
      checkpoint: file where the pairs done so far are saved every ``checkpoint_seconds``; a
        call with the same inputs and ``checkpoint_key`` resumes from it (the result is the
        same as an uninterrupted run's). The caller deletes it when done.
    Returns:
      :class:`PairScores`, ``protein`` indexing ``ids``.
    """
    from interplm_jax.progress import progress_bar

    lengths = np.array([len(c) for c in coords], dtype=np.int64)
    groups = _batches(lengths, batch_tokens)
    key = json.dumps([checkpoint_key, ids_checksum(ids), lengths.tolist(), threshold, window,
                      radius, n_permutations, seed, batch_tokens])
    parts, done = _resume(checkpoint, key)
    saved = time.monotonic()
    with progress_bar(len(ids), desc="spatial scores", unit="protein") as bar:
        bar.update(sum(len(g) for g in groups[:done]))
        for gi in range(done, len(groups)):
            group = groups[gi]
            raw = [np.asarray(load(ids[i])) for i in group]
            for i, r in zip(group, raw):
                if len(r) != lengths[i]:
                    raise InputError(f"protein {ids[i]!r}: {len(r)} activation rows but "
                                     f"{lengths[i]} residues in its structure")
            acts = np.asarray(features(np.concatenate(raw)), dtype=np.float32)
            split = np.split(acts, np.cumsum(lengths[group])[:-1])
            del acts
            L = int(lengths[group].max())
            perms = _pad([protein_permutations(ids[i], lengths[i], n_permutations, seed).T
                          for i in group], L).transpose(0, 2, 1)
            scores = batch_scores(
                _pad(split, L, fill=-np.inf), lengths[group],
                contact_lists(_pad([coords[i] for i in group], L).astype(np.float64),
                              lengths[group], radius),
                perms, window, threshold)
            scores["protein"] = group[scores["protein"]]
            parts.append(PairScores(**scores))
            bar.update(len(group))
            if checkpoint is not None and time.monotonic() - saved >= checkpoint_seconds:
                parts = [PairScores.concatenate(parts)]
                _save_checkpoint(checkpoint, key, parts[0], gi + 1)
                saved = time.monotonic()
    pairs = PairScores.concatenate(parts)
    log.info("spatial scores: %d (protein, feature) pairs above %.2f over %d proteins",
             len(pairs), threshold, len(ids))
    return pairs


def ids_checksum(ids: Sequence[str]) -> int:
    """CRC32 of the protein ids in order."""
    return zlib.crc32("\n".join(ids).encode())


def _save_checkpoint(path, key: str, pairs: PairScores, done: int) -> None:
    from interplm_jax.atomic import atomic_path

    with atomic_path(path) as tmp:
        np.savez(tmp, key=np.array(key), done=np.array(done), **pairs.to_dict())
    log.info("spatial scores: checkpoint after %d batches (%d pairs) in %s", done, len(pairs), path)


def _resume(path, key: str) -> tuple[list[PairScores], int]:
    z = load_npz(path)
    if z is None:
        return [], 0
    if str(z.get("key")) != key or not {"done", *FIELDS} <= set(z):
        log.warning("%s: checkpoint of other inputs, starting over", path)
        return [], 0
    pairs = PairScores(**{f: z[f] for f in FIELDS})
    done = int(z["done"])
    log.info("spatial scores: resuming after %d batches (%d pairs) from %s", done, len(pairs), path)
    return [pairs], done
