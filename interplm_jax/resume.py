"""Reading the saved state of a resumable computation (a ``.partial.npz`` checkpoint, a result
reused when its inputs match): a file that cannot be read is computed again, with a warning
naming it and what is wrong, never a traceback about pickles.
"""

from __future__ import annotations

import logging
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

#: What ``np.load`` of a damaged or foreign file raises.
NPZ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)


def npz_problem(e: BaseException) -> str:
    """An ``np.load`` failure in words (NumPy calls any file that is neither ``.npy`` nor a zip
    archive "pickled data")."""
    if isinstance(e, ValueError) and "pickle" in str(e):
        return "not an .npz file"
    if isinstance(e, KeyError):
        return f"no array {e}"
    return f"a damaged .npz file: {e}"


def load_npz(path: str | os.PathLike | None) -> dict[str, np.ndarray] | None:
    """Every array of the ``.npz`` at ``path``; None when there is no such file, or (with a
    warning) when it cannot be read: the caller then computes the state again."""
    if path is None or not Path(path).is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except NPZ_ERRORS as e:
        log.warning("%s: cannot use it (%s); computing it again", path, npz_problem(e))
        return None
