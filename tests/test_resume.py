"""Saved state of resumable computations: a damaged file is computed again with a warning that
names it, never a traceback about pickles (issue 13 item 17)."""

import io
import logging

import numpy as np

from interplm_jax.resume import load_npz


def test_a_good_state_loads_and_a_missing_one_is_none(tmp_path):
    np.savez(tmp_path / "s.npz", a=np.arange(3), key=np.array("k"))
    got = load_npz(tmp_path / "s.npz")
    assert sorted(got) == ["a", "key"] and got["a"].tolist() == [0, 1, 2] and str(got["key"]) == "k"
    assert load_npz(tmp_path / "absent.npz") is None and load_npz(None) is None


def test_damaged_states_are_none_with_a_warning_naming_the_file(tmp_path, caplog):
    buf = io.BytesIO()
    np.savez_compressed(buf, a=np.arange(10_000))
    cases = {"garbage.partial.npz": b"not an npz at all",
             "empty.partial.npz": b"",
             "torn.partial.npz": buf.getvalue()[: len(buf.getvalue()) // 2]}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert load_npz(tmp_path / name) is None
        (msg,) = [r.getMessage() for r in caplog.records]
        assert name in msg and "computing it again" in msg and "pickle" not in msg
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load_npz(tmp_path / "garbage.partial.npz")
    assert "(not an .npz file)" in caplog.text
