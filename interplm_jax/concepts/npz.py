"""The concept evaluation's files (labels, counts): one compressed ``.npz`` tagged with its
format, written atomically, and opened with named errors."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from interplm_jax.atomic import atomic_write
from interplm_jax.errors import InputError
from interplm_jax.resume import NPZ_ERRORS, npz_problem


def save_npz(path: str | os.PathLike, fmt: str, **arrays) -> Path:
    """Write ``arrays`` and ``format=fmt`` to ``path`` as one compressed ``.npz``, atomically."""
    buf = io.BytesIO()
    np.savez_compressed(buf, format=np.array(fmt), **arrays)
    return atomic_write(path, buf.getvalue())


def open_npz(path: str | os.PathLike, fmt: str, what: str, hint: str):
    """The ``NpzFile`` at ``path`` (use it in a ``with``), checked to carry ``format=fmt``.

    Raises InputError "<path>: cannot read <what> (...)" or "<path>: not a <what> file (<hint>)"
    (spaces of ``what`` hyphenated there, e.g. "concept-counts")."""
    try:
        z = np.load(path, allow_pickle=False)
    except NPZ_ERRORS as e:
        raise InputError(f"{path}: cannot read {what} ({npz_problem(e)})") from None
    if "format" not in z or str(z["format"]) != fmt:
        z.close()
        raise InputError(f"{path}: not a {what.replace(' ', '-')} file ({hint})")
    return z
