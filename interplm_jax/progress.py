"""Progress bars and logging for long jobs: one place, so every stage looks the same."""

from __future__ import annotations

import logging
import os
import sys

from tqdm.auto import tqdm


#: Libraries whose INFO lines are chatter at our default level (orbax logs every save and
#: restore through absl; JAX logs that it found no TPU library): WARNING unless ``verbose``.
QUIET_LOGGERS = ("absl", "jax._src.xla_bridge")


def progress_enabled() -> bool:
    """False when ``INTERPLM_PROGRESS=0`` (tests, log files)."""
    return os.environ.get("INTERPLM_PROGRESS", "1") != "0"


def progress_bar(total: int | None = None, desc: str = "", unit: str = "it", **kwargs) -> tqdm:
    """A tqdm bar showing count, rate and ETA on stderr; ``INTERPLM_PROGRESS=0`` silences it.

    Large or unknown totals are shown with SI prefixes (41.5k tok); small ones as plain counts.
    """
    kwargs.setdefault("unit_scale", total is None or total >= 10_000)
    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True,
                file=sys.stderr, disable=not progress_enabled(), **kwargs)


def setup_logging(verbose: bool = False) -> None:
    """Log to stderr with timestamps; INFO by default (libraries in :data:`QUIET_LOGGERS` at
    WARNING), DEBUG for everything with ``verbose``."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.WARNING)
