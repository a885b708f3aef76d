"""Stable short hashes of what a result depends on (stage markers, resumable partial results)."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping


def fingerprint(parts: Mapping[str, Any]) -> str:
    """A stable hash (16 hex digits) of JSON-able ``parts``; key order does not matter."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]
