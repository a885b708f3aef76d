"""Progress bars and logging for long jobs: one place, so every stage looks the same."""

from __future__ import annotations

import logging
import os
import sys

from tqdm.auto import tqdm


def progress_bar(total: int | None = None, desc: str = "", unit: str = "it", **kwargs) -> tqdm:
    """A tqdm bar showing count, rate and ETA on stderr; ``INTERPLM_PROGRESS=0`` silences it.

    Large or unknown totals are shown with SI prefixes (41.5k tok); small ones as plain counts.
    """
    disable = os.environ.get("INTERPLM_PROGRESS", "1") == "0"
    kwargs.setdefault("unit_scale", total is None or total >= 10_000)
    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True,
                file=sys.stderr, disable=disable, **kwargs)


def setup_logging(verbose: bool = False) -> None:
    """Log to stderr with timestamps; INFO by default, DEBUG with ``verbose``. Orbax's INFO
    lines (through absl: a dozen per checkpoint opened) only with ``verbose``."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )
    logging.getLogger("absl").setLevel(logging.DEBUG if verbose else logging.WARNING)
