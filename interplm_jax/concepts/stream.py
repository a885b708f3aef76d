"""Counts for one split of an evaluation set, streaming activations from a store.

Proteins are visited in store order and grouped into chunks of about ``chunk_residues``
residues; each chunk is read (contiguous runs of rows; the next chunk is read in a background
thread while this one is counted), passed through ``features`` ((n, d) -> (n, F) normalized
feature activations) and added to a :class:`~interplm_jax.concepts.f1.CountAccumulator`.
With ``checkpoint`` the accumulator and the chunk cursor are saved every
``checkpoint_every_s`` seconds, and a rerun with the same inputs resumes from there.
"""

from __future__ import annotations

import io
import logging
import os
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from interplm_jax.atomic import atomic_write
from interplm_jax.concepts.evalset import EvalSet
from interplm_jax.concepts.f1 import DEFAULT_THRESHOLDS, ConceptCounts, CountAccumulator
from interplm_jax.concepts.labels import ConceptLabels, is_per_residue, protein_chunks
from interplm_jax.digest import fingerprint
from interplm_jax.errors import InputError, StoreError
from interplm_jax.progress import progress_bar
from interplm_jax.resume import load_npz
from interplm_jax.store import prefetch

log = logging.getLogger(__name__)

Features = Callable[[np.ndarray], np.ndarray]


def count_split(store, layer: int, labels: ConceptLabels, eval_set: EvalSet, split: str,
                features: Features, n_features: int, thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                chunk_residues: int = 8192, checkpoint: str | os.PathLike | None = None,
                checkpoint_every_s: float = 300.0, meta: dict | None = None,
                features_id: str = "", worker: tuple[int, int] = (0, 1)) -> ConceptCounts:
    """TP/FP/domain-hit counts of every (kept concept, feature, threshold) over one split.

    Args:
      store: an :class:`~interplm_jax.store.ActivationStore` holding the split's proteins.
      features: (n, d) float32 -> (n, F) feature activations (thresholds apply to these).
      features_id: a string identifying ``features`` (e.g. SAE path + options), part of the
        checkpoint's fingerprint so a checkpoint is never resumed with another encoder.
      worker: ``(i, n)``: count only the i-th of n equal parts of the chunks, so that n
        processes or hosts share a split; the parts' counts add up to the whole
        (:meth:`ConceptCounts.__add__`, ``evaluate_concepts.py merge``).
    """
    i_worker, n_workers = worker
    if not 0 <= i_worker < n_workers:
        raise InputError(f"worker {i_worker}/{n_workers}: need 0 <= i < n")
    ids = list(eval_set.split(split))
    lab_idx = labels.indices(ids)
    try:
        store_idx = np.array([store.index_of(i) for i in ids], np.int64)
    except StoreError as e:
        raise InputError(f"{e} (the store must hold the evaluation set's proteins)") from None
    lengths = labels.lengths[lab_idx]
    bad = np.flatnonzero(np.diff(store.offsets)[store_idx] != lengths)
    if len(bad):
        i = bad[0]
        raise InputError(f"protein {ids[i]!r}: {lengths[i]} residues in the labels but "
                         f"{np.diff(store.offsets)[store_idx[i]]} rows in the store")
    order = np.argsort(store_idx, kind="stable")
    lab_idx, store_idx, lengths = lab_idx[order], store_idx[order], lengths[order]
    missing = [c for c in eval_set.concepts if c not in labels.concepts]
    if missing:
        raise InputError(f"concept(s) {missing[:3]} of the evaluation set are not in the labels "
                         "(was the evaluation set made from these labels?)")
    concept_idx = np.array([labels.concepts.index(c) for c in eval_set.concepts], np.int64)
    chunks = protein_chunks(lengths, chunk_residues)
    chunks = [c for part in np.array_split(np.arange(len(chunks)), n_workers)[i_worker:i_worker + 1]
              for c in (chunks[j] for j in part)]

    per_res = np.array([is_per_residue(c) for c in eval_set.concepts], bool)
    acc = CountAccumulator(n_features, len(concept_idx), thresholds, per_res)
    key = fingerprint(dict(split=split, layer=layer, ids=ids, concepts=eval_set.concepts,
                           thresholds=acc.thresholds.tolist(), chunk_residues=chunk_residues,
                           store=getattr(store, "url", ""), features=features_id, F=n_features,
                           worker=list(worker)))
    start = 0
    state = load_npz(checkpoint)
    if state is not None:
        if str(state.get("fingerprint")) == key:
            acc.load_state(state)
            start = int(state["next_chunk"])
            log.info("resuming from %s at chunk %d of %d", checkpoint, start, len(chunks))
        else:
            log.warning("%s belongs to another run; starting over", checkpoint)

    def save(next_chunk: int) -> None:
        buf = io.BytesIO()
        np.savez(buf, fingerprint=np.array(key), next_chunk=np.array(next_chunk), **acc.state())
        atomic_write(checkpoint, buf.getvalue())

    bar = progress_bar(total=int(sum(lengths[c].sum() for c in chunks)), desc=f"F1 {split}", unit="res")
    bar.update(int(sum(lengths[c].sum() for c in chunks[:start])))
    last_save = time.monotonic()
    with bar:
        reads = prefetch(lambda i: store.protein_rows(layer, store_idx[chunks[i]]), range(start, len(chunks)))
        for i, x in enumerate(reads, start):
            acts = np.asarray(features(x))
            if acts.shape != (x.shape[0], n_features):
                raise InputError(f"features returned shape {acts.shape}, expected ({x.shape[0]}, {n_features})")
            sl = chunks[i]
            acc.update(acts, labels.matrix(lab_idx[sl], concept_idx), n_proteins=sl.stop - sl.start)
            bar.update(int(lengths[sl].sum()))
            if checkpoint is not None and time.monotonic() - last_save > checkpoint_every_s:
                save(i + 1)
                last_save = time.monotonic()
    meta = {"split": split, "layer": layer, "n_features": n_features, **(meta or {})}
    if n_workers > 1:
        meta["worker"] = [i_worker, n_workers]
    counts = acc.result(list(eval_set.concepts), meta)
    if checkpoint is not None and Path(checkpoint).exists():
        Path(checkpoint).unlink()
    return counts
