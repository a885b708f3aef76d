"""Hashes of what a result depends on: config values (stage markers, resumable partial
results) and input files by their content."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping


def fingerprint(parts: Mapping[str, Any]) -> str:
    """A stable hash (16 hex digits) of JSON-able ``parts``; key order does not matter."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's bytes, read in blocks (any size)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def tree_digest(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a directory: every file's relative path and content, in name order."""
    root = Path(path)
    h = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        h.update(f"{p.relative_to(root).as_posix()}\0{file_digest(p)}\n".encode())
    return h.hexdigest()
