"""Shared plumbing of the click scripts: logging, exit status 2 for bad input and 1 for faults."""

from __future__ import annotations

import functools
import importlib.util
import logging
import sys
from pathlib import Path
from types import ModuleType

import click

from interplm_jax.errors import InputError, InterPLMError
from interplm_jax.progress import setup_logging


class BadInput(click.ClickException):
    """Reported as ``Error: <message>`` on stderr with exit status 2."""

    exit_code = 2


class Fault(click.ClickException):
    """Reported as ``Error: <message>`` on stderr with exit status 1."""

    exit_code = 1


def command(fn):
    """Wrap a click command body: set up logging; turn :class:`InputError` into exit status 2,
    and the faults we name (:class:`InterPLMError`, e.g. a training that cannot go on) and those
    of the system (``OSError``: a full disk, a file-size limit) into exit status 1, each with its
    message and no traceback (``--verbose`` logs it).

    Other exceptions (bugs) propagate: traceback, exit status 1.
    """

    @functools.wraps(fn)
    def wrapper(*args, verbose: bool = False, **kwargs):
        setup_logging(verbose)
        log = logging.getLogger(fn.__module__)
        try:
            return fn(*args, **kwargs)
        except InputError as e:
            log.debug("bad input", exc_info=True)
            raise BadInput(str(e)) from None
        except (InterPLMError, OSError) as e:
            log.debug("fault", exc_info=True)
            raise Fault(str(e) if isinstance(e, InterPLMError) else f"{type(e).__name__}: {e}") from None

    return click.option("--verbose", "-v", is_flag=True, help="Log debug messages.")(wrapper)


def parse_layers(text: str) -> tuple[int, ...]:
    """``"1,2,5-6"`` -> ``(1, 2, 5, 6)``."""
    layers: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = part.split("-")
                layers.extend(range(int(lo), int(hi) + 1))
            elif part:
                layers.append(int(part))
    except ValueError:
        raise InputError(f"--layers: cannot parse {text!r}; expected e.g. 1,2,3 or 1-6") from None
    if not layers:
        raise InputError("--layers: no layer given")
    if len(set(layers)) != len(layers):
        raise InputError(f"--layers: duplicate layer in {text!r}")
    return tuple(sorted(layers))


def parse_worker(text: str) -> tuple[int, int]:
    """``"3/8"`` -> ``(3, 8)``: worker 3 of 8 (0-based), for ``--worker I/N`` options."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise InputError(f"--worker: expected I/N such as 0/4, got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise InputError(f"--worker: need 0 <= I < N, got {text!r}")
    return i, n


def load_script(path: str | Path) -> ModuleType:
    """Import a script file (``scripts/<stage>.py``) as a module, to call its click command in
    this process (the pipeline and the tests do). Registered in ``sys.modules`` under a name
    from its file name, as dataclasses and pickling expect."""
    path = Path(path)
    name = f"scripts_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
