#!/usr/bin/env python
"""The end-to-end demo (``make demo``): every stage of the pipeline on bundled real proteins.

Runs on 2 CPU cores in minutes with the tiny ESM-2 built locally; ``--model`` takes a real
ESM-2 (hub name with cached weights, or a local directory). Each stage skips work already done,
so rerunning resumes.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from interplm_jax.cli import command
from interplm_jax.config import load_yaml
from interplm_jax.fasta import read_fasta
from torch_bridge.esm import ExtractConfig, extract_to_store
from torch_bridge.tiny_esm import build_tiny_esm

REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger("demo")


def stage_extract(cfg: ExtractConfig, out: Path, model: str | None):
    """FASTA -> activation store."""
    if model is None and cfg.model == "tiny":
        model = str(build_tiny_esm(out / "models" / "tiny-esm2"))
        log.info("built the tiny ESM-2 at %s", model)
    proteins, report = read_fasta(REPO / "data" / "demo" / "swissprot_sample.fasta.gz",
                                  max_length=cfg.max_length, on_invalid=cfg.on_invalid)
    log.info("read %d proteins (%d skipped: %s)", len(proteins), len(report.skipped), report.counts())
    return extract_to_store(proteins, model or cfg.model, cfg.layers, out / "store",
                            shard_size=cfg.shard_size, max_tokens=cfg.max_tokens,
                            store_dtype=cfg.store_dtype)


def stage_train(config: str, out: Path, store) -> None:
    """Activation store -> a small grid of SAEs per layer (out/sweeps/layer_<L>)."""
    from interplm_jax.train import TrainConfig
    from interplm_jax.train.run import train_layers

    logging.getLogger("absl").setLevel(logging.WARNING)
    results = train_layers(load_yaml(TrainConfig, config, "train"), store.url, out / "sweeps",
                           resume=True)
    for layer, r in results.items():
        click.echo(f"layer {layer}: trained {len(r.grid)} SAEs for {r.step} steps -> {r.out}")


@click.command(context_settings={"show_default": True})
@click.option("--config", default=str(REPO / "configs" / "demo.yaml"), help="Demo config.")
@click.option("--out", default="out/demo", help="Output directory.")
@click.option("--model", default=None, help="A real ESM-2 (hub name or local path) instead of the tiny one.")
@command
def main(config, out, model):
    """Run the demo pipeline and print what each stage produced."""
    out = Path(out)
    store = stage_extract(load_yaml(ExtractConfig, config, "extract"), out, model)
    click.echo(store.summary())
    stage_train(config, out, store)


if __name__ == "__main__":
    main()
