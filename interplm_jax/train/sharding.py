"""Devices and hosts: the (`sae`, `data`) mesh, shardings of the train state, each host's slice.

SAEs of the grid are split over the `sae` axis (parameters, optimizer state, counters), the
batch over the `data` axis (replicated over `sae`). The data axis is laid out across processes
first, so with several hosts each host holds (and reads) only its own rows of each batch.
"""

from __future__ import annotations

import logging
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from interplm_jax.errors import InputError

log = logging.getLogger(__name__)


def maybe_initialize_distributed() -> None:
    """``jax.distributed.initialize()`` when launched on several hosts (TPU VM pods, or the
    JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID environment); else nothing."""
    # (must run before anything touches a JAX backend, so no jax.process_count() here)
    if getattr(jax.distributed, "is_initialized", lambda: False)():
        return
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    if os.environ.get("JAX_COORDINATOR_ADDRESS") or "," in hosts:
        jax.distributed.initialize()
        log.info("joined %d processes as process %d", jax.process_count(), jax.process_index())


def mesh_shape(n_devices: int, grid_size: int, batch_size: int, sae: int = 0, data: int = 0) -> tuple[int, int]:
    """(sae, data) axis sizes. Defaults: all devices on `sae` when the grid divides, else `data`."""
    if sae and data:
        shape = (sae, data)
    elif sae:
        shape = (sae, n_devices // sae)
    elif data:
        shape = (n_devices // data, data)
    elif grid_size % n_devices == 0:
        shape = (n_devices, 1)
    elif batch_size % n_devices == 0:
        shape = (1, n_devices)
    else:
        shape = (1, 1)
        log.warning("neither the grid (%d) nor the batch (%d) divides over %d devices: using one",
                    grid_size, batch_size, n_devices)
    s, d = shape
    if s * d > n_devices or s <= 0 or d <= 0:
        raise InputError(f"mesh (sae={s}, data={d}) needs {s * d} devices; {n_devices} available")
    if grid_size % s:
        raise InputError(f"mesh: the grid of {grid_size} SAEs does not divide over sae={s} devices")
    if batch_size % d:
        raise InputError(f"mesh: batch_size {batch_size} does not divide over data={d} devices")
    return shape


def make_mesh(sae: int, data: int) -> Mesh:
    """A Mesh of sae x data devices, the `data` axis running across processes first."""
    devices = sorted(jax.devices(), key=lambda dv: (dv.process_index, dv.id))[: sae * data]
    grid = np.array(devices, dtype=object).reshape(data, sae).T
    return Mesh(grid, ("sae", "data"))


def state_shardings(mesh: Mesh, state):
    """NamedShardings for a TrainState pytree (or a tuple of them): leading axis on `sae`,
    scalars replicated."""
    return jax.tree.map(
        lambda leaf: NamedSharding(mesh, P("sae") if np.ndim(leaf) >= 1 else P()), state)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Rows of the batch (B, d) over `data`, replicated over `sae`."""
    return NamedSharding(mesh, P("data", None))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def host_slice(mesh: Mesh, batch_size: int, d: int) -> tuple[int, int]:
    """(host_index, host_count) of this process's contiguous share of each batch's rows.

    (0, 1) when every process needs the whole batch (e.g. all devices on `sae`).
    """
    sharding = batch_sharding(mesh)
    rows = set()
    for dev, idx in sharding.devices_indices_map((batch_size, d)).items():
        if dev.process_index == jax.process_index():
            sl = idx[0]
            rows.add((sl.start or 0, batch_size if sl.stop is None else sl.stop))
    start = min(r[0] for r in rows)
    stop = max(r[1] for r in rows)
    size = stop - start
    if size == batch_size:
        return 0, 1
    covered = sum(b - a for a, b in rows)
    if covered < size or batch_size % size or start % size:
        raise InputError("mesh: this process's rows of the batch are not one aligned block; "
                         "choose mesh_data as a multiple of the number of processes")
    return start // size, batch_size // size


def global_batch(mesh: Mesh, local: np.ndarray, batch_size: int):
    """The global (batch_size, d) array from this process's rows (all rows on one process)."""
    sharding = batch_sharding(mesh)
    if jax.process_count() == 1:
        return jax.device_put(local, sharding)
    return jax.make_array_from_process_local_data(sharding, local, (batch_size, local.shape[-1]))
