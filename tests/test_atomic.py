"""Atomic writes: a reader sees the old content or the new, never a half-written one."""

import os
import stat

import numpy as np
import pytest

from interplm_jax.atomic import atomic_dir, atomic_path, atomic_write


def test_atomic_write_replaces_and_leaves_no_temporaries(tmp_path):
    atomic_write(tmp_path / "a.txt", "one")
    atomic_write(tmp_path / "a.txt", b"two")
    assert (tmp_path / "a.txt").read_text() == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_atomic_dir_appears_whole_or_not_at_all(tmp_path):
    target = tmp_path / "model"
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "half.bin").write_bytes(b"x")
            raise RuntimeError("killed mid-write")
    assert list(tmp_path.iterdir()) == []
    with atomic_dir(target) as tmp:
        (tmp / "config.json").write_text("{}")
    with atomic_dir(target) as tmp:  # replaces the old directory whole
        (tmp / "new.json").write_text("{}")
    assert [p.name for p in target.iterdir()] == ["new.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


@pytest.fixture(params=[0o022, 0o002])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def test_outputs_get_the_mode_a_plain_open_gives(tmp_path, umask):
    """Not tempfile's private 0600/0700: collaborators and web servers must read outputs."""
    atomic_write(tmp_path / "a.txt", "x")
    with atomic_path(tmp_path / "b.npy") as tmp:
        np.save(tmp, np.zeros(2))
    with atomic_dir(tmp_path / "d") as tmp:
        (tmp / "f").write_text("x")
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "b.npy").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o777 & ~umask
    (tmp_path / "plain.txt").write_text("x")  # the mode open() gives, for comparison
    assert (tmp_path / "a.txt").stat().st_mode == (tmp_path / "plain.txt").stat().st_mode
