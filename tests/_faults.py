"""Kill tests: run Python code in a child process that SIGKILLs itself the moment a chosen
function is first called, a real kill at an exact point (nothing is mocked)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_CHILD = """
import functools, importlib, os, signal, sys
module, _, name = sys.argv[1].partition(":")
target = functools.reduce(getattr, name.split("."), importlib.import_module(module))
code = target.__code__

def kill_on_call(frame, event, arg):
    if event == "call" and frame.f_code is code:
        os.kill(os.getpid(), signal.SIGKILL)

sys.setprofile(kill_on_call)
exec(sys.argv[2])
"""


def run_killed_at(target: str, code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh Python; SIGKILL it at the first call of ``target``
    (``"package.module:function"`` or ``"package.module:Class.method"``)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               INTERPLM_PROGRESS="0")
    return subprocess.run([sys.executable, "-c", _CHILD, target, code], capture_output=True,
                          text=True, env=env, cwd=REPO)


def was_killed(proc: subprocess.CompletedProcess) -> bool:
    return proc.returncode == -signal.SIGKILL
