"""The study ledger: markers of finished stages and --redo, also when killed midway."""

from __future__ import annotations

import pytest

from _faults import run_killed_at, was_killed
from interplm_jax.layout import StudyLayout
from interplm_jax.study import STAGES, Ledger, redo


def _finished_study(root):
    """A study directory whose every stage is marked done and has its outputs on disk."""
    layout = StudyLayout(root)
    for stage in STAGES:
        Ledger(layout.ledger).mark(stage, {"stage": stage})
        for p in layout.outputs(stage):
            if p.suffix:  # a file
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text(stage)
            else:
                (p / "part").mkdir(parents=True, exist_ok=True)
                (p / "part" / "x").write_text(stage)
    return layout


def _marked(layout):
    return [s for s in STAGES if Ledger(layout.ledger).status(s, {"stage": s}) == "done"]


def test_redo_removes_that_stage_and_every_later_one(tmp_path):
    layout = _finished_study(tmp_path / "study")
    removed = redo(layout, "concepts")
    assert _marked(layout) == list(STAGES[:STAGES.index("concepts")])
    later = [p for s in STAGES[STAGES.index("concepts"):] for p in layout.outputs(s)]
    assert sorted(removed) == sorted(later) and not any(p.exists() for p in later)
    assert all(p.exists() for s in STAGES[:STAGES.index("concepts")] for p in layout.outputs(s))


@pytest.mark.parametrize("stage", ["train", "concepts"])
def test_a_kill_inside_redo_leaves_no_later_stage_marked_done(tmp_path, stage):
    layout = _finished_study(tmp_path / "study")
    proc = run_killed_at("shutil:rmtree", f"from pathlib import Path\n"
                         f"from interplm_jax.layout import StudyLayout\n"
                         f"from interplm_jax.study import redo\n"
                         f"redo(StudyLayout(Path({str(layout.root)!r})), {stage!r})")
    assert was_killed(proc), proc.stderr
    assert any(p.exists() for p in layout.outputs(stage))  # killed before removing anything
    assert _marked(layout) == list(STAGES[:STAGES.index(stage)])
