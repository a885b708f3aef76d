"""Output locks (interplm_jax.lock): one holder at a time, named; no trace once released."""

import json
import os

import pytest

from interplm_jax.errors import LockedError
from interplm_jax.lock import locked


def test_one_holder_at_a_time_and_the_second_is_told_who(tmp_path):
    out = tmp_path / "a" / "b"
    with locked(out, ".lock", "training"):
        holder = json.loads((out / ".lock").read_text())
        assert holder["pid"] == os.getpid() and holder["since"]
        with pytest.raises(LockedError, match=rf"b: training is already running here \(process "
                                              rf"{os.getpid()} on {holder['host']} since "):
            with locked(out, ".lock", "training"):
                pass
        (out / "result.txt").write_text("x")
    assert sorted(p.name for p in out.iterdir()) == ["result.txt"]  # the lock file is gone
    with locked(out, ".lock", "training"):  # free again
        pass


def test_directories_made_for_a_lock_alone_are_removed(tmp_path):
    with pytest.raises(RuntimeError):
        with locked(tmp_path / "a" / "b", ".lock", "training"):
            raise RuntimeError("failed before writing anything")
    assert list(tmp_path.iterdir()) == []


def test_object_stores_take_no_lock():
    with locked("gs://bucket/sweep", ".lock", "training"):
        with locked("gs://bucket/sweep", ".lock", "training"):
            pass
