"""Atomic writes to local files: write to a temporary name beside the target, then rename.

A reader never sees a half-written file, and a crash leaves at most a stray ``.tmp-*`` file.
Outputs get the mode a plain ``open`` / ``mkdir`` gives (0666 / 0777 less the umask), not
``tempfile``'s private 0600 / 0700, so collaborators and web servers can read them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from pathlib import Path
from typing import Iterator


def _temp_name(path: Path, make) -> Path:
    """Create a new entry ``.tmp-<name>-<random><suffix>`` beside ``path`` with ``make``."""
    for _ in range(100):
        tmp = path.parent / f".tmp-{path.stem}-{secrets.token_hex(4)}{path.suffix}"
        try:
            make(tmp)
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"{path.parent}: cannot find a free temporary name for {path.name}")


def _new_file(tmp: Path) -> None:
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # umask applies


@contextlib.contextmanager
def _naming(path: Path) -> Iterator[None]:
    """Give an ``OSError`` without a file name (a full disk, a file-size limit) the output's."""
    try:
        yield
    except OSError as e:
        if e.filename is not None or e.errno is None:
            raise
        raise OSError(e.errno, f"{e.strerror} (writing {path})") from e


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    Works for anything a library writes by file name (``np.save``, ``savefig``, ``torch.save``).
    Keeps the target's suffix so libraries that dispatch on it behave.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path, _new_file)
    try:
        with _naming(path):
            yield tmp
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a new temporary directory beside ``path``; move it onto ``path`` if the block
    succeeds (replacing an existing ``path``), delete it otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path, lambda p: p.mkdir(0o777))  # umask applies
    try:
        with _naming(path):
            yield tmp
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` atomically; return the path."""
    payload = data.encode() if isinstance(data, str) else data
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)
