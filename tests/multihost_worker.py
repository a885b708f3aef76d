"""One process of the two-process test (tests/test_train_sweep.py::test_two_processes_equal_one).

argv: process id, coordinator port, work directory (holding data.npy).
"""

import json
import sys
from pathlib import Path

import jax

jax.config.update("jax_cpu_collectives_implementation", "gloo")
pid, port, work = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                           process_id=pid)

import numpy as np  # noqa: E402
from test_train_sweep import B, D, config  # noqa: E402
from train_streams import ArrayStream  # noqa: E402

from interplm_jax.train import train_sweep  # noqa: E402

data = np.load(work / "data.npy")
seen = []


def make_stream(host_index, host_count, position):
    seen.append([host_index, host_count])
    return ArrayStream(data, B, 0, host_index, host_count, position)


result = train_sweep(config(mesh_sae=4, mesh_data=2), make_stream, D, work / "sweep", layer=3)
hosts = jax.experimental.multihost_utils.process_allgather(np.asarray(seen[0]))
if pid == 0:
    (work / "hosts.json").write_text(json.dumps(np.asarray(hosts).reshape(2, 2).tolist()))
    np.savez(work / "params.npz", **result.params)
print("done", pid, flush=True)
