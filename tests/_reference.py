"""Import the reference InterPLM (``../shared/reference/InterPLM``) for parity tests.

Its modules import packages that its SAE loading path never calls (wandb, h5py, pandas, einops,
tap); when those are not installed here, an empty placeholder module stands in for each, so that
``interplm.sae.inference.load_sae`` and the SAE classes (the real reference code) can run.
A placeholder raises on any attribute use, so a test that did need one fails loudly.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
from pathlib import Path

import pytest

REFERENCE = Path(os.environ.get(
    "INTERPLM_REFERENCE",
    Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "InterPLM"))
_IMPORT_ONLY = ("wandb", "h5py", "pandas", "einops", "tap")


class _Placeholder(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise RuntimeError(f"module {self.__name__!r} is a placeholder for the reference import "
                           f"(tried {self.__name__}.{name})")


def reference(tmp_path_factory=None):
    """The reference's ``interplm`` package, or skip the test when it is absent."""
    if not (REFERENCE / "interplm" / "sae" / "dictionary.py").is_file():
        pytest.skip("the reference InterPLM is absent")
    os.environ.setdefault("INTERPLM_DATA", str(Path(os.environ.get("TMPDIR", "/tmp")) / "interplm_ref_data"))
    placed = [n for n in _IMPORT_ONLY if n not in sys.modules and importlib.util.find_spec(n) is None]
    for name in placed:
        sys.modules[name] = _Placeholder(name)
    if str(REFERENCE) not in sys.path:
        sys.path.insert(0, str(REFERENCE))
    try:
        for mod in ("interplm.sae.dictionary", "interplm.train.configs", "interplm.sae.normalize"):
            importlib.import_module(mod)
        return importlib.import_module("interplm.sae.inference")
    except ImportError as e:
        pytest.skip(f"the reference InterPLM cannot be imported here: {e}")
    finally:  # the reference modules keep their references; other libraries must not see them
        for name in placed:
            sys.modules.pop(name, None)
