"""Reading text inputs (FASTA, UniProtKB TSV): plain or gzip, UTF-8 with or without a BOM, from
a file, a named pipe, ``<(...)`` or ``/dev/stdin``, with named errors for what cannot be read.

The file is opened once and gzip is recognised by peeking at its first bytes, so a pipe is not
consumed by the sniff. Lines are decoded one at a time, so an error names its line.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import zlib
from pathlib import Path
from typing import Iterator

from interplm_jax.errors import InputError

_GZIP_MAGIC = b"\x1f\x8b"
_BOM = b"\xef\xbb\xbf"


@contextlib.contextmanager
def open_text(path: str | os.PathLike, what: str = "file") -> Iterator[Iterator[str]]:
    """Yield an iterator over the lines of a text file (each with its line ending, as read with
    ``newline=""``), gunzipped when the file starts with the gzip magic bytes.

    Raises:
      InputError: the file is missing or unreadable (``what`` names it: "FASTA file"), is a
        truncated or corrupted gzip, or holds a line that is not UTF-8 (message with the line).
    """
    path = Path(path)
    try:
        raw = open(path, "rb")
    except FileNotFoundError:
        raise InputError(f"{path}: {what} not found") from None
    except (IsADirectoryError, PermissionError) as e:
        raise InputError(f"{path}: cannot read the {what}: {e.strerror}") from None
    with raw:
        gz = raw.peek(2)[:2] == _GZIP_MAGIC  # a peek, not a read: a pipe keeps its bytes
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw
        with stream:
            yield _decoded_lines(stream, path)


def _decoded_lines(stream, path: Path) -> Iterator[str]:
    lineno = 0
    try:
        for lineno, line in enumerate(stream, start=1):
            if lineno == 1 and line.startswith(_BOM):
                line = line[len(_BOM):]
            try:
                yield line.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputError(
                    f"{path}:{lineno}: not UTF-8 text (byte {line[e.start]:#04x} at column "
                    f"{e.start + 1}); convert the file, e.g. iconv -f latin1 -t utf-8") from None
    except EOFError:
        raise InputError(f"{path}: truncated gzip file (it ends {_where(lineno)}, before the end "
                         "of its compressed stream); download or copy it again") from None
    except (gzip.BadGzipFile, zlib.error) as e:
        raise InputError(f"{path}: corrupted gzip data {_where(lineno)} ({e})") from None


def _where(good_lines: int) -> str:
    return f"after line {good_lines}" if good_lines else "before its first line"
