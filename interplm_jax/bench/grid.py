"""Every SAE of a grid measured in one pass over a split of the evaluation store.

G SAEs of one architecture and width are stacked on a leading axis (as the trainer holds them).
Each chunk of whole proteins is read from the store once; one jitted call encodes it with all G
SAEs (``jax.lax.map``: one (n, F) block alive at a time) and returns

- the normalized features of every SAE side by side, (n, G*F): SAE g's in columns g*F:(g+1)*F,
  which the concept F1 engine (:func:`interplm_jax.concepts.stream.count_split`) counts as one
  wide dictionary, later cut back into G :class:`ConceptCounts`;
- per SAE, with raw features (``scale`` = 1, as reconstructions always use): the squared
  reconstruction error and the number of tokens each feature is active on.

Reconstruction statistics (DESIGN.md section 7), over the tokens of the split:
  l0 = mean number of active features per token; fve = 1 - sum ||x - x_hat||^2 / sum ||x - mean||^2;
  dead_frac = features never active; dense_frac = features active on more than
  :data:`DENSE_FRACTION` of the tokens.
The neuron baseline (arch ``neuron``, the identity) reconstructs exactly: fve = 1, and its
activity is that of its [0, 1]-scaled neurons.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from interplm_jax import sae as sae_arch
from interplm_jax.concepts.f1 import DEFAULT_THRESHOLDS, ConceptCounts
from interplm_jax.concepts.stream import count_split
from interplm_jax.errors import InputError
from interplm_jax.sae.features import pad_rows
from interplm_jax.sae_dir import SavedSAE

#: A feature active on more than this fraction of tokens is dense.
DENSE_FRACTION = 0.1


@dataclasses.dataclass(frozen=True)
class ReconStats:
    """Reconstruction and activity of G SAEs over one set of tokens; arrays are (G,)."""

    l0: np.ndarray
    fve: np.ndarray
    dead_frac: np.ndarray
    dense_frac: np.ndarray
    n_tokens: int


def stack_saes(saes: Sequence[SavedSAE]) -> tuple[str, dict[str, np.ndarray]]:
    """``(arch, params)`` with every leaf of the G SAEs stacked on a leading axis.

    Raises:
      InputError unless all SAEs share the architecture and leaf shapes.
    """
    if not saes:
        raise InputError("no SAEs to measure")
    arch = saes[0].arch
    for s in saes[1:]:
        if s.arch != arch or any(s.params[k].shape != v.shape for k, v in saes[0].params.items()):
            raise InputError(f"SAEs of one pass need one architecture and shape: {arch} "
                             f"{saes[0].params['W_enc'].shape} vs {s.arch} {s.params['W_enc'].shape} "
                             f"({s.meta.get('id', '?')})")
    return arch, {k: np.stack([s.params[k] for s in saes]) for k in saes[0].params}


@functools.partial(jax.jit, static_argnames=("arch", "recon"))
def _grid_chunk(arch: str, params: dict, x: jax.Array, n_valid: jax.Array, recon: bool):
    """x (n, d), the first n_valid rows real -> (normalized (n, G*F), sq. error (G,), active (G, F)).

    One encoder product per SAE: the normalized features are the raw ones times ``scale`` (as
    every architecture's ``encode`` computes them); ``recon`` False skips the decoder (the
    squared error is then 0).
    """
    spec = sae_arch.get(arch)
    valid = (jnp.arange(x.shape[0]) < n_valid)[:, None]

    def one(p):
        if arch == "neuron":  # the identity baseline: clipped, reconstructs exactly
            f = raw = spec.encode(p, x)
        else:
            raw = spec.encode({**p, "scale": jnp.ones_like(p["scale"])}, x)
            f = raw * p["scale"]
        err = jnp.zeros((), x.dtype)
        if recon and arch != "neuron":
            err = jnp.sum(jnp.where(valid, (x - spec.decode(p, raw)) ** 2, 0.0))
        active = jnp.sum((raw > 0) & valid, axis=0, dtype=jnp.int32)
        return f, err, active

    f, err, active = jax.lax.map(one, params)  # f: (G, n, F)
    return jnp.moveaxis(f, 0, 1).reshape(x.shape[0], -1), err, active


class GridFeatures:
    """``features(x)``: (n, d) -> (n, G*F) normalized features of G stacked SAEs, for the F1
    engine; with ``stats`` it also sums, over every call, what :meth:`recon` turns into
    :class:`ReconStats`."""

    def __init__(self, arch: str, params: dict[str, np.ndarray], bucket: int = 1024, stats: bool = True):
        """``bucket``: rows are zero-padded to a multiple of this (the chunk size: one compile);
        ``stats`` False: features only (no decoder, no sums)."""
        self.arch, self.bucket, self.stats = arch, bucket, stats
        self.params = {k: jnp.asarray(v) for k, v in params.items()}
        self.G, self.F = params["W_enc"].shape[0], params["W_enc"].shape[-1]
        self.err = np.zeros(self.G)
        self.active = np.zeros((self.G, self.F), np.int64)
        self.sum_x: np.ndarray | None = None
        self.sum_sq = 0.0
        self.n = 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        n = len(x)
        rows = -(-max(n, 1) // self.bucket) * self.bucket
        f, err, active = _grid_chunk(self.arch, self.params, jnp.asarray(pad_rows(x, rows)), jnp.asarray(n),
                                     self.stats)
        if not self.stats:
            return np.asarray(f)[:n]
        x64 = np.asarray(x, np.float64)
        self.sum_x = x64.sum(0) if self.sum_x is None else self.sum_x + x64.sum(0)
        self.sum_sq += float(np.sum(x64 ** 2))
        self.err += np.asarray(err, np.float64)
        self.active += np.asarray(active)
        self.n += n
        return np.asarray(f)[:n]

    def recon(self) -> ReconStats:
        """Statistics over every token seen so far."""
        if self.n == 0:
            raise InputError("no tokens measured" if self.stats else "statistics were not asked for")
        total_var = self.sum_sq - float(self.sum_x @ self.sum_x) / self.n  # sum ||x - mean||^2
        fve = 1.0 - self.err / total_var if total_var > 0 else np.full(self.G, np.nan)
        frac = self.active / self.n
        return ReconStats(self.active.sum(1) / self.n, fve, (self.active == 0).mean(1),
                          (frac > DENSE_FRACTION).mean(1), self.n)


def split_counts(counts: ConceptCounts, G: int) -> list[ConceptCounts]:
    """Counts of a (G*F)-wide dictionary -> G counts of F features each."""
    F = counts.n_features // G
    return [dataclasses.replace(counts, tp=counts.tp[:, g * F:(g + 1) * F], fp=counts.fp[:, g * F:(g + 1) * F],
                                hits=counts.hits[:, g * F:(g + 1) * F], meta={**counts.meta, "n_features": F})
            for g in range(G)]


@dataclasses.dataclass(frozen=True)
class GridMeasure:
    """One pass's results: reconstruction on test; concept counts per SAE on valid and test."""

    recon: ReconStats
    valid: list[ConceptCounts]
    test: list[ConceptCounts]


def measure_grid(store, layer: int, labels, eval_set, saes: Sequence[SavedSAE],
                 thresholds: Sequence[float] = DEFAULT_THRESHOLDS, chunk_residues: int = 8192,
                 activations: str = "normalized") -> GridMeasure:
    """Measure G SAEs together: the valid split read once (concept counts), the test split read
    once (concept counts and reconstruction statistics).

    Args:
      store: the evaluation :class:`~interplm_jax.store.ActivationStore` (valid + test proteins).
      labels, eval_set: :class:`ConceptLabels` and :class:`EvalSet` of the study.
      saes: G SAEs of one architecture and width (normalized: thresholds apply to f * scale).
      chunk_residues: residues per chunk of one SAE's F1 pass; G SAEs read chunks of
        chunk_residues / G, so that a pass holds as many feature values as one SAE's.
      activations: ``normalized`` or ``raw`` (scale set to 1 for the F1 counts).
    """
    arch, params = stack_saes(saes)
    if activations == "raw" and arch != "neuron":
        params = {**params, "scale": np.ones_like(params["scale"])}
    G, F = params["W_enc"].shape[0], params["W_enc"].shape[-1]
    chunk = max(64, chunk_residues // G)
    out = {}
    recon = None
    for split in ("valid", "test"):
        grid = GridFeatures(arch, params, bucket=chunk, stats=split == "test")
        counts = count_split(store, layer, labels, eval_set, split, grid, G * F, thresholds,
                             chunk, meta={"layer": layer, "split": split})
        out[split] = split_counts(counts, G)
        if split == "test":
            recon = grid.recon()
    return GridMeasure(recon, out["valid"], out["test"])
