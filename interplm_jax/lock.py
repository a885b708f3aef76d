"""Exclusive locks on output directories, so that two processes never write one output at once
(two ``train.py --resume`` on one sweep, two extraction workers with the same ``--worker``).

A lock is an ``flock`` on a small file in the directory that records its holder (pid, host, time,
command); the file is removed when the holder is done. The operating system releases the lock
when the holder exits, even after ``kill -9`` (the file then stays, but does not lock), so a
lock is never stale. Object stores (``gs://``) have no such locks: there the caller must not run
two writers of one output.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket
import sys
from pathlib import Path
from typing import Iterator

from interplm_jax.errors import LockedError
from interplm_jax.paths import AnyPath, is_url


@contextlib.contextmanager
def locked(directory: AnyPath | str, name: str, what: str) -> Iterator[None]:
    """Hold the lock file ``directory/name`` while the block runs (nothing for a URL).

    ``what`` says what the holder does ("training", "extraction worker 0/2") for the message.
    The directory (and its parents) is created if needed, and what was created is removed again
    on leaving if it is then empty (a run that failed before writing anything leaves no trace).

    Raises:
      LockedError: another process holds the lock; the message names it and the lock file.
    """
    if not isinstance(directory, Path) and is_url(directory):
        yield  # an object store: no locks
        return
    directory = Path(directory).absolute()
    created = [d for d in (directory, *directory.parents) if not d.exists()]  # innermost first
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    fd = _acquire(path, what)
    try:
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv),
                  "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        yield
    finally:
        path.unlink(missing_ok=True)  # before the release: a waiting opener sees a stale inode
        os.close(fd)
        for d in created:
            if not d.is_dir() or any(d.iterdir()):
                break
            d.rmdir()


def _acquire(path: Path, what: str) -> int:
    """Open and flock ``path``; retry if the file was replaced meanwhile (see the unlink)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise LockedError(f"{path.parent}: {what} is already running here ({holder}; "
                              f"lock file {path}); wait for it to end or stop it") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            return fd
        os.close(fd)


def _holder(fd: int) -> str:
    """The holder recorded in a lock file, in words."""
    try:
        h = json.loads(os.pread(fd, 4096, 0))
        return f"process {h['pid']} on {h['host']} since {h['since']}: {h['command']}"
    except (ValueError, KeyError, TypeError, OSError):
        return "another process"
