"""Orbax checkpoints of the whole train state, with the facts that must match on resume.

A checkpoint holds the TrainState (params, optimizer state, step, PRNG keys, dead-feature
counters) and, as JSON, the grid, the architecture, the shapes, the schedule and the token
stream's position after the last batch consumed. Orbax writes asynchronously, keeps the newest
``keep`` checkpoints and makes each one atomically visible (locally: temporary directory, then
rename; on GCS: a checkpoint counts once its commit marker is written). ``directory`` may be a
``gs://`` URL (orbax reaches it through ``etils.epath``).

Readers (a resume, :func:`read_params` for normalization and export) take the newest checkpoint
that reads back (:func:`newest_readable`): one that cannot be read is reported with the error,
never a traceback, and the next older one is used.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any, Callable, Iterable, TypeVar

import jax
import numpy as np
import orbax.checkpoint as ocp

from interplm_jax.errors import InputError
from interplm_jax.paths import AnyPath, as_path

log = logging.getLogger(__name__)
T = TypeVar("T")

# Keys of the metadata that a resumed run must share with the checkpoint.
MUST_MATCH = ("arch", "d_model", "d_sae", "grid", "steps", "batch_size", "schedule", "layer")


class CheckpointMismatch(InputError):
    """A checkpoint from another grid, architecture, shape or schedule."""


class Checkpoints:
    """The checkpoints of one sweep directory (``<sweep>/checkpoints``)."""

    def __init__(self, directory: str | AnyPath, keep: int = 3, use_async: bool = True):
        self.directory = as_path(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=use_async)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, meta: dict[str, Any]) -> None:
        """Start saving ``state`` (a pytree of jax arrays) and ``meta`` (JSON) at ``step``."""
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)

    def read_meta(self, step: int) -> dict[str, Any]:
        out = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return out["meta"]

    def restore(self, step: int, abstract_state, expected_meta: dict[str, Any]):
        """(state, meta) at ``step``; ``abstract_state``: ShapeDtypeStructs with shardings.

        Raises CheckpointMismatch when the checkpoint's grid, architecture, shapes or schedule
        differ from ``expected_meta``.
        """
        meta = self.read_meta(step)
        check_meta(meta, expected_meta, self.directory / str(step))
        out = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state)))
        return out["state"], meta

    def set_aside_newer(self, step: int) -> None:
        """Set the checkpoints newer than ``step`` aside as ``<step>.unreadable`` (kept, not
        deleted; a run resumed from ``step`` writes those steps again)."""
        newer = [s for s in self.manager.all_steps() if s > step]
        if not newer:
            return
        if jax.process_index() == 0:
            for s in newer:
                log.warning("%s: set aside as %s", self.directory / str(s),
                            _set_aside(self.directory / str(s)).name)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("checkpoints set aside")
        self.manager.reload()

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def _reader(directory: AnyPath) -> ocp.CheckpointManager:
    """A manager that only reads (creates nothing, deletes nothing) and knows the item types."""
    return ocp.CheckpointManager(
        directory, options=ocp.CheckpointManagerOptions(create=False),
        item_handlers={"state": ocp.PyTreeCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()})


def saved_steps(directory: str | AnyPath) -> list[int]:
    """Steps of the complete checkpoints in ``directory`` (local or ``gs://``), ascending;
    none when it does not exist."""
    directory = as_path(directory)
    if not directory.is_dir():
        return []
    reader = _reader(directory)
    try:
        return sorted(reader.all_steps())
    finally:
        reader.close()


def newest_readable(steps: Iterable[int], read: Callable[[int], T], where: AnyPath) -> tuple[int, T]:
    """(step, read(step)) for the newest of ``steps`` whose checkpoint reads back. One that
    cannot be read (a torn copy, a bad disk: any error but :class:`CheckpointMismatch`) is
    reported with the error and the next older one is tried.

    Raises InputError when none can be read.
    """
    steps = sorted(steps, reverse=True)
    _drop_closed_loop_reports()  # before the reads: the reports race the except clause
    for i, step in enumerate(steps):
        try:
            return step, read(step)
        except CheckpointMismatch:
            raise
        except Exception as e:  # noqa: BLE001  (whatever orbax or tensorstore raise for bad bytes)
            reason = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            then = f"falling back to step {steps[i + 1]}" if i + 1 < len(steps) else "no older one"
            log.warning("%s: the checkpoint at step %d cannot be read (%s); %s", where, step,
                        reason, then)
    raise InputError(f"{where}: none of the checkpoints (steps {sorted(steps)}) can be read; "
                     "start a new --out, or restore the directory from a copy")


def _drop_closed_loop_reports() -> None:
    """After a failed orbax read, TensorStore still finishes the reads that were in flight and
    calls back into orbax's event loop, closed by then; Python prints each such call as a
    ``RuntimeError: Event loop is closed`` with a traceback (through ``sys.excepthook``,
    ``sys.unraisablehook`` from TensorStore's threads, or ``threading.excepthook`` from orbax's
    Python threads, or asyncio's "Exception in callback" log records), dozens of them. Drop those
    reports, only those: every other exception still goes to the previous hook."""
    if getattr(sys.excepthook, "drops_closed_loop", False):
        return

    def closed_loop(exc) -> bool:
        return isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"

    previous_except, previous_unraisable = sys.excepthook, sys.unraisablehook
    previous_thread = threading.excepthook

    def excepthook(kind, value, tb):
        if not closed_loop(value):
            previous_except(kind, value, tb)

    def unraisablehook(unraisable):
        if not closed_loop(unraisable.exc_value):
            previous_unraisable(unraisable)

    def thread_excepthook(args):
        if not closed_loop(args.exc_value):
            previous_thread(args)

    excepthook.drops_closed_loop = True
    sys.excepthook, sys.unraisablehook = excepthook, unraisablehook
    threading.excepthook = thread_excepthook
    logging.getLogger("asyncio").addFilter(
        lambda record: not (record.exc_info and closed_loop(record.exc_info[1])))


def _set_aside(path: AnyPath) -> AnyPath:
    """Rename ``path`` to ``<name>.unreadable`` (``.unreadable<n>`` when that is taken)."""
    target, n = path.parent / f"{path.name}.unreadable", 1
    while target.exists():
        target, n = path.parent / f"{path.name}.unreadable{n}", n + 1
    path.rename(target)
    return target


def read_params(directory: str | AnyPath, step: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The train state's ``params`` at ``step`` as NumPy arrays (leading axis: the SAEs of the
    grid) and the checkpoint's metadata. Only the parameters are read (an orbax partial
    restore), so the optimizer state never has to fit in memory."""
    reader = _reader(as_path(directory))
    try:
        tree = reader.item_metadata(step)["state"].tree
        leaves = {k: 0 for k in tree["params"]}
        restore_args = {"params": {k: ocp.RestoreArgs(restore_type=np.ndarray) for k in leaves}}
        out = reader.restore(step, args=ocp.args.Composite(
            state=ocp.args.PyTreeRestore(item={"params": leaves}, restore_args=restore_args,
                                         partial_restore=True),
            meta=ocp.args.JsonRestore()))
    finally:
        reader.close()
    return {k: np.asarray(v) for k, v in out["state"]["params"].items()}, dict(out["meta"])


def check_meta(found: dict[str, Any], expected: dict[str, Any], where: AnyPath) -> None:
    """Refuse a checkpoint whose ``MUST_MATCH`` entries differ, naming each difference."""
    diffs = []
    for key in MUST_MATCH:
        if found.get(key) != expected.get(key):
            diffs.append(f"{key}: checkpoint has {_short(found.get(key))}, "
                         f"this run has {_short(expected.get(key))}")
    if diffs:
        raise CheckpointMismatch(
            f"{where}: checkpoint does not belong to this run (" + "; ".join(diffs) + "). "
            "Start a new --out directory, or resume with the config that wrote it.")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 120 else text[:117] + "..."


def abstract_like(state, shardings):
    """ShapeDtypeStructs of ``state`` carrying ``shardings`` (the restore target)."""
    return jax.tree.map(
        lambda leaf, s: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=s), state, shardings)
