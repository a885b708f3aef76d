"""Train the sweeps of a config on an activation store: one sweep directory per layer."""

from __future__ import annotations

import logging
from pathlib import Path

from interplm_jax.data import TokenStream
from interplm_jax.errors import InputError
from interplm_jax.paths import AnyPath, as_path, display
from interplm_jax.store import ActivationStore
from interplm_jax.train.config import TrainConfig, build_grid
from interplm_jax.train.sharding import maybe_initialize_distributed
from interplm_jax.train.sweep import SweepResult, train_sweep

log = logging.getLogger(__name__)


def sweep_dir(out: str | Path, layer: int) -> AnyPath:
    """The sweep directory of ``layer`` under ``out`` (a local path or a ``gs://`` URL)."""
    return as_path(out) / f"layer_{layer}"


def train_layers(cfg: TrainConfig, store: str | Path | None = None, out: str | Path | None = None,
                 resume: bool = False, layers: tuple[int, ...] | None = None,
                 where: str = "train") -> dict[int, SweepResult]:
    """Train the grid of ``cfg`` on each chosen layer of the store, one after the other.

    ``store``/``out`` default to the config's; ``layers`` to the config's, then all the store's.
    A layer whose sweep already finished is skipped with ``resume`` (its final checkpoint is
    read back). Joins the other hosts first when launched on several (jax.distributed).
    Options that depend on the store (TopK's k <= F) are checked before anything is written;
    ``where`` names the config section in those messages (e.g. ``config.yaml:train``).
    """
    maybe_initialize_distributed()
    store = store or cfg.store
    out = out or cfg.out
    if not store:
        raise InputError("no activation store: give --store or train.store in the config")
    if not out:
        raise InputError("no output directory: give --out or train.out in the config")
    acts = ActivationStore.open(store)
    chosen = tuple(layers or cfg.layers or acts.layers)
    missing = [layer for layer in chosen if layer not in acts.layers]
    if missing:
        raise InputError(f"{store}: layer(s) {missing} not in the store (layers {list(acts.layers)})")
    build_grid(cfg, where, F=cfg.dict_size(acts.d_model))
    results = {}
    for layer in chosen:
        def make_stream(host_index, host_count, position, layer=layer):
            return TokenStream(acts, layer, batch_size=cfg.batch_size, seed=cfg.seed,
                               host_index=host_index, host_count=host_count, position=position)

        log.info("layer %d: %d tokens of width %d", layer, acts.n_tokens, acts.d_model)
        results[layer] = train_sweep(cfg, make_stream, acts.d_model, sweep_dir(out, layer),
                                     layer=layer, resume=resume,
                                     extra_config={"store": display(store),
                                                   "model": acts.manifest.get("model")})
    return results
