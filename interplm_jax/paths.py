"""Local paths and ``gs://`` URLs behind one path type, for the small files of a sweep or an SAE.

Local paths stay :class:`pathlib.Path` (absolute); URLs (``gs://bucket/prefix``) become
:class:`etils.epath.Path`, the path type orbax uses, which reaches Google Cloud Storage through
``gcsfs``. Both offer the same methods (``/``, ``read_text``, ``read_bytes``, ``exists``,
``is_dir``, ``iterdir``, ``name``), so callers write one code path; the few operations that
differ live here:

* :func:`write_atomic`: local files are written to a temporary name and renamed
  (:mod:`interplm_jax.atomic`); an object store write is one whole-object upload, which GCS makes
  visible atomically (a reader sees the old object or the new one, never a part).
* :func:`append_text`: local files are appended to; objects cannot be, so the new text is added
  to the object's content and the whole object is rewritten (callers batch their appends).
* :func:`read_json`: the JSON reader with named errors, for paths and URLs.

Arrays (activation stores, checkpoints) do not come through here: TensorStore and orbax take the
same URLs natively (TensorStore's ``gcs`` kvstore; orbax via ``epath``).

Credentials are the usual Google ones: Application Default Credentials (``gcloud auth
application-default login``, a service account on a TPU VM / GCE, or
``GOOGLE_APPLICATION_CREDENTIALS``). Tests point both clients at a local emulator with
``STORAGE_EMULATOR_HOST`` (gcsfs) and ``TENSORSTORE_GCS_HTTP_URL`` (TensorStore).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Union

from interplm_jax.atomic import atomic_write
from interplm_jax.errors import InputError

AnyPath = Union[Path, "epath.Path"]  # noqa: F821  (etils imported lazily)


def is_url(path: str | os.PathLike) -> bool:
    """True for ``scheme://...`` (gs://, s3://, ...); False for a local path (``file://`` too)."""
    text = os.fspath(path)
    return "://" in text and not text.startswith("file://")


def as_path(path: str | os.PathLike) -> AnyPath:
    """An absolute :class:`pathlib.Path` for a local path, an :class:`etils.epath.Path` for a URL."""
    if not isinstance(path, Path) and is_url(path):
        from etils import epath

        return epath.Path(os.fspath(path))
    text = os.fspath(path)
    if text.startswith("file://"):
        text = text[len("file://"):]
    return Path(text).absolute()


def display(path: str | os.PathLike) -> str:
    """The path as a user wrote it (``gs://b/x``, ``/abs/x``), for messages and config files."""
    return os.fspath(as_path(path))


def write_atomic(path: AnyPath | str, data: bytes | str) -> AnyPath:
    """Write ``data`` (bytes, or text as UTF-8) so that a reader never sees a partial file."""
    path = as_path(path)
    if isinstance(path, Path):
        atomic_write(path, data)
    else:
        path.write_bytes(data.encode() if isinstance(data, str) else data)  # one object upload
    return path


def rmtree(path: AnyPath | str) -> None:
    """Delete a directory tree (local, or every object under a URL prefix)."""
    path = as_path(path)
    if isinstance(path, Path):
        shutil.rmtree(path)
    else:
        path.rmtree()


def append_text(path: AnyPath | str, text: str) -> None:
    """Append ``text`` to a file (local) or rewrite the object with ``text`` added (URL)."""
    path = as_path(path)
    if isinstance(path, Path):
        with open(path, "a") as f:
            f.write(text)
        return
    old = path.read_text() if path.exists() else ""
    path.write_text(old + text)


def mkdir(path: AnyPath | str) -> AnyPath:
    """Create a local directory (and parents); object stores have no directories: nothing to do."""
    path = as_path(path)
    if isinstance(path, Path):
        path.mkdir(parents=True, exist_ok=True)
    return path


#: What JSON calls the values Python's json module reads, for messages.
JSON_NAMES = {dict: "a JSON object", list: "a list", str: "a string", int: "a number",
              float: "a number", bool: "a boolean", type(None): "null"}


def read_json(path: AnyPath | str, missing: str, expect: type | None = None) -> Any:
    """Parse the JSON file or object ``path``; :class:`InputError` with the message ``missing``
    when it is absent, or naming the file when it is not valid JSON (UTF-8 text) or, with
    ``expect`` (``dict``, ``list``), when its value is of another kind."""
    path = as_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        raise InputError(missing) from None
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON: {e}") from None
    if expect is not None and not isinstance(value, expect):
        raise InputError(f"{path}: holds {JSON_NAMES.get(type(value), type(value).__name__)}; "
                         f"expected {JSON_NAMES[expect]}")
    return value
