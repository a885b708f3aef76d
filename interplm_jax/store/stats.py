"""Activation statistics per layer, streamed while a store is written (DESIGN.md section 7).

Each shard's rows give a partial (token count, mean, sum of squared deviations, max |value| per
dimension, token-norm sum, max and histogram), written beside the shard before its completion
marker (``stats/shards/<i>.json``); when the store completes, the partials are merged in shard
order (Chan et al.'s pairwise update, float64 sums) into ``stats/layer_<L>.json``. No second pass over
the model or the data; the result does not depend on which worker wrote which shard.

For a store written without statistics, :func:`compute_stats` makes them in one pass over the
stored rows, through the same code.

References:
  Chan, Golub & LeVeque, "Updating formulae and a pairwise algorithm for computing sample
  variances" (1979).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from typing import Iterable, Mapping

import numpy as np

from interplm_jax.errors import StoreError

log = logging.getLogger(__name__)

#: Token-norm histogram edges: 0, then 20 log-spaced bins per decade from 1e-3 to 1e5, then inf.
NORM_EDGES = np.concatenate([[0.0], np.logspace(-3, 5, 161), [np.inf]])
_BLOCK_ROWS = 4096  # rows per block (temporaries of 4096 x d float32)


@dataclasses.dataclass(frozen=True)
class Moments:
    """Mergeable statistics of a set of token rows of one layer (d = d_model).

    Attributes:
      n: tokens. mean, m2, absmax: (d,) float64 (m2 = sum of squared deviations from the mean).
      norm_sum, norm_max: sum and max of the tokens' L2 norms. norm_counts: (len(NORM_EDGES) - 1,).
    """

    n: int
    mean: np.ndarray
    m2: np.ndarray
    absmax: np.ndarray
    norm_sum: float
    norm_max: float
    norm_counts: np.ndarray

    @classmethod
    def of_rows(cls, x: np.ndarray) -> "Moments":
        """Statistics of rows ``x`` (n, d), any float dtype: float32 element-wise work, float64
        sums (relative error ~1e-9), in blocks of rows merged exactly."""
        n, d = x.shape
        # NaN/Inf rows propagate into the statistics (that is how training finds them): no warning
        with np.errstate(invalid="ignore", over="ignore"):
            return functools.reduce(cls.merge, (cls._of_block(x[s:s + _BLOCK_ROWS])
                                                for s in range(0, n, _BLOCK_ROWS)), cls.empty(d))

    @classmethod
    def _of_block(cls, x: np.ndarray) -> "Moments":
        b = np.asarray(x, dtype=np.float32)
        mean = b.mean(axis=0, dtype=np.float64)
        m2 = np.square(b - mean.astype(np.float32)).sum(axis=0, dtype=np.float64)
        norms = np.sqrt(np.einsum("ij,ij->i", b, b).astype(np.float64))
        bins = np.searchsorted(NORM_EDGES, norms, side="right") - 1
        counts = np.bincount(np.minimum(bins, len(NORM_EDGES) - 2),  # NaN norms: the last bin
                             minlength=len(NORM_EDGES) - 1)
        absmax = np.maximum(b.max(axis=0), -b.min(axis=0)).astype(np.float64)
        return cls(len(b), mean, m2, absmax, float(norms.sum()), float(norms.max()), counts)

    @classmethod
    def empty(cls, d: int) -> "Moments":
        z = np.zeros(d)
        return cls(0, z, z, z, 0.0, 0.0, np.zeros(len(NORM_EDGES) - 1, dtype=np.int64))

    def merge(self, other: "Moments") -> "Moments":
        """Statistics of the union of both row sets."""
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        n = self.n + other.n
        delta = other.mean - self.mean
        return Moments(n, self.mean + delta * (other.n / n),
                       self.m2 + other.m2 + delta ** 2 * (self.n * other.n / n),
                       np.maximum(self.absmax, other.absmax), self.norm_sum + other.norm_sum,
                       max(self.norm_max, other.norm_max), self.norm_counts + other.norm_counts)


@dataclasses.dataclass(frozen=True)
class LayerStats:
    """Statistics of one stored layer.

    Attributes:
      layer: the layer. n_tokens: tokens counted.
      mean, var, absmax: (d,) per-dimension mean, variance (population) and max |value|.
      norm_mean, norm_max: mean and max token L2 norm.
      norm_edges, norm_counts: the token-norm histogram (counts per [edge_i, edge_i+1)).
    """

    layer: int
    n_tokens: int
    mean: np.ndarray
    var: np.ndarray
    absmax: np.ndarray
    norm_mean: float
    norm_max: float
    norm_edges: np.ndarray
    norm_counts: np.ndarray

    @classmethod
    def of_moments(cls, layer: int, m: Moments) -> "LayerStats":
        return cls(layer, m.n, m.mean, m.m2 / max(m.n, 1), m.absmax, m.norm_sum / max(m.n, 1),
                   m.norm_max, NORM_EDGES, m.norm_counts)

    @property
    def mean_norm_ratio(self) -> float:
        """||mean|| / mean token norm: near 1 when every token is mostly the common mean."""
        with np.errstate(invalid="ignore"):  # NaN statistics give NaN, no warning
            return float(np.linalg.norm(self.mean) / self.norm_mean) if self.norm_mean > 0 else 0.0

    def outliers(self, ratio: float = 10.0, z: float = 6.0) -> dict[str, list[int]]:
        """Dimensions whose variance or max |value| stands out from the others.

        A dimension is an outlier of a quantity q (variance, max |value|) when q is at least
        ``ratio`` times the median over dimensions *and* more than ``z`` robust standard
        deviations (1.4826 x the median absolute deviation) above that median.

        Returns:
          ``{"var": [dims], "absmax": [dims]}``, each sorted by decreasing q.
        """
        out = {}
        for name, q in (("var", self.var), ("absmax", self.absmax)):
            with np.errstate(invalid="ignore"):  # a layer holding NaN flags no dimension
                med = float(np.median(q))
                mad = 1.4826 * float(np.median(np.abs(q - med)))
                flagged = (q >= ratio * med) & (q > med + z * mad) & (q > 0)
            idx = np.flatnonzero(flagged)
            out[name] = [int(i) for i in idx[np.argsort(-q[idx], kind="stable")]]
        return out

    def summary(self, ratio: float = 10.0, z: float = 6.0) -> dict:
        """JSON-ready scalars and outliers (the store's ``stats/summary.json`` entry)."""
        out = self.outliers(ratio, z)
        med_var = float(np.median(self.var))
        return {"n_tokens": self.n_tokens, "norm_mean": self.norm_mean, "norm_max": self.norm_max,
                "mean_norm": float(np.linalg.norm(self.mean)), "mean_norm_ratio": self.mean_norm_ratio,
                "median_var": med_var, "median_absmax": float(np.median(self.absmax)),
                "outliers_var": out["var"], "outliers_absmax": out["absmax"],
                "outlier_var_ratio": [float(self.var[i] / med_var) for i in out["var"]]
                if med_var > 0 else []}

    def describe(self, max_dims: int = 8) -> str:
        """A few lines for people (scripts/inspect_store.py, logs)."""
        s = self.summary()
        lines = [f"layer {self.layer}: {self.n_tokens} tokens; token norm mean {s['norm_mean']:.4g}, "
                 f"max {s['norm_max']:.4g}; ||mean|| {s['mean_norm']:.4g} "
                 f"(ratio to mean norm {s['mean_norm_ratio']:.3f})",
                 f"  per-dimension variance median {s['median_var']:.4g}, max |value| median "
                 f"{s['median_absmax']:.4g}"]
        for key, what, q, med in (("outliers_var", "variance", self.var, s["median_var"]),
                                  ("outliers_absmax", "max |value|", self.absmax, s["median_absmax"])):
            dims = s[key]
            if dims:
                shown = ", ".join(f"{i} ({q[i] / med:.0f}x)" for i in dims[:max_dims])
                lines.append(f"  outlier dimensions by {what}: {shown}"
                             + (f" ... ({len(dims)} in all)" if len(dims) > max_dims else ""))
        lo, hi = np.flatnonzero(self.norm_counts)[[0, -1]] if self.norm_counts.any() else (0, 0)
        lines.append(f"  token norms in [{self.norm_edges[lo]:.3g}, {self.norm_edges[hi + 1]:.3g})")
        return "\n".join(lines)


# --- on-store encoding ---------------------------------------------------------------------------

def shard_key(i: int) -> str:
    return f"stats/shards/{i:06d}.json"


def layer_key(layer: int) -> str:
    return f"stats/layer_{layer}.json"


def encode(arrays: Mapping[str, np.ndarray]) -> bytes:
    """JSON of named arrays (exact for float64; deterministic bytes, so a resumed extraction
    writes the same files as an uninterrupted one)."""
    return json.dumps({k: {"dtype": str(np.asarray(v).dtype), "shape": list(np.shape(v)),
                           "data": np.asarray(v).ravel().tolist()} for k, v in arrays.items()},
                      sort_keys=True).encode()


def decode(raw: bytes, where: str) -> dict[str, np.ndarray]:
    try:
        return {k: np.asarray(v["data"], dtype=v["dtype"]).reshape(v["shape"])
                for k, v in json.loads(raw).items()}
    except (ValueError, TypeError, KeyError) as e:
        raise StoreError(f"{where}: damaged statistics file ({e!r})") from None


def moments_arrays(per_layer: Mapping[int, Moments]) -> dict[str, np.ndarray]:
    """Flat ``{"<L>/<field>": array}`` of per-layer moments (a shard's partial)."""
    out = {}
    for L, m in per_layer.items():
        for f in dataclasses.fields(Moments):
            out[f"{L}/{f.name}"] = np.asarray(getattr(m, f.name))
    return out


def moments_of(arrays: Mapping[str, np.ndarray], layer: int, where: str) -> Moments:
    try:
        v = {f.name: arrays[f"{layer}/{f.name}"] for f in dataclasses.fields(Moments)}
    except KeyError as e:
        raise StoreError(f"{where}: no {e.args[0]} in the statistics") from None
    return Moments(int(v["n"]), v["mean"], v["m2"], v["absmax"], float(v["norm_sum"]),
                   float(v["norm_max"]), v["norm_counts"])


def layer_arrays(s: LayerStats) -> dict[str, np.ndarray]:
    return {f.name: np.asarray(getattr(s, f.name)) for f in dataclasses.fields(LayerStats)}


def layer_stats_of(arrays: Mapping[str, np.ndarray], where: str) -> LayerStats:
    try:
        v = {f.name: arrays[f.name] for f in dataclasses.fields(LayerStats)}
    except KeyError as e:
        raise StoreError(f"{where}: no {e.args[0]} in the statistics") from None
    return LayerStats(int(v["layer"]), int(v["n_tokens"]), v["mean"], v["var"], v["absmax"],
                      float(v["norm_mean"]), float(v["norm_max"]), v["norm_edges"], v["norm_counts"])


def merge_shards(objects, layers: Iterable[int], n_shards: int) -> dict[int, LayerStats] | None:
    """Merge the shard partials of a store (``objects``: its kvstore) in shard order and write
    ``stats/layer_<L>.json`` and ``stats/summary.json``; None when some shard has no partial."""
    layers = list(layers)
    total = {L: None for L in layers}
    for i in range(n_shards):
        raw = objects.read(shard_key(i))
        if raw is None:
            log.info("%s: shard %d has no statistics; run compute_stats to make them", objects.url, i)
            return None
        arrays = decode(raw, objects.url + shard_key(i))
        for L in layers:
            m = moments_of(arrays, L, objects.url + shard_key(i))
            total[L] = m if total[L] is None else total[L].merge(m)
    result = {L: LayerStats.of_moments(L, m) for L, m in total.items()}
    write(objects, result)
    return result


def write(objects, stats: Mapping[int, LayerStats]) -> None:
    """Write each layer's ``stats/layer_<L>.json``, then ``stats/summary.json``."""
    for L, s in stats.items():
        objects.write(layer_key(L), encode(layer_arrays(s)))
    summary = objects.read_json("stats/summary.json") or {}
    objects.write_json("stats/summary.json", summary | {str(L): s.summary() for L, s in stats.items()})


def load_stats(store, layer: int) -> LayerStats | None:
    """The statistics of ``layer`` of an open store, or None if it has none."""
    if layer not in store.layers:
        raise StoreError(f"{store.url}: layer {layer} not stored (layers: {list(store.layers)})")
    raw = store.objects.read(layer_key(layer))
    return None if raw is None else layer_stats_of(decode(raw, store.url + layer_key(layer)), store.url)


def nonfinite_shards(store, layer: int) -> list[int] | None:
    """The shards whose statistics partials say that ``layer`` holds NaN or Inf there (None for
    a store without partials, e.g. one whose statistics :func:`compute_stats` made)."""
    found = []
    for i in range(store.n_shards):
        raw = store.objects.read(shard_key(i))
        if raw is None:
            return None
        m = moments_of(decode(raw, store.url + shard_key(i)), layer, store.url + shard_key(i))
        if not np.isfinite(m.absmax).all():  # (max |value| propagates NaN)
            found.append(i)
    return found


def compute_stats(store, layers: Iterable[int] | None = None) -> dict[int, LayerStats]:
    """Statistics of a store's layers in one pass over its rows, shard by shard; written into the
    store (for stores made without them)."""
    from interplm_jax.progress import progress_bar

    layers = list(layers or store.layers)
    total = {L: Moments.empty(store.d_model) for L in layers}
    with progress_bar(total=store.n_tokens * len(layers), desc="statistics", unit="tok") as bar:
        for i in range(store.n_shards):
            _, _, a, b = store.shard_bounds(i)
            for L in layers:
                total[L] = total[L].merge(Moments.of_rows(store.rows(L, a, b)))
                bar.update(b - a)
    result = {L: LayerStats.of_moments(L, m) for L, m in total.items()}
    write(store.objects, result)
    return result


def store_stats(store, layer: int) -> LayerStats:
    """The stored statistics of ``layer``, computed (one pass) and written if absent."""
    s = load_stats(store, layer)
    if s is None:
        log.info("%s: no statistics for layer %d; computing them from the stored rows", store.url, layer)
        s = compute_stats(store, [layer])[layer]
    return s
