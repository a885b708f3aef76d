"""The one rule of dependencies: interplm_jax never imports torch."""

import pkgutil
import subprocess
import sys
from pathlib import Path

import interplm_jax

REPO = Path(__file__).resolve().parents[1]


def test_interplm_jax_and_all_its_modules_do_not_import_torch():
    modules = [m.name for m in pkgutil.walk_packages(interplm_jax.__path__, "interplm_jax.")]
    assert "interplm_jax.store" in modules and "interplm_jax.data" in modules
    code = ("import sys, importlib\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "bad = sorted(k for k in sys.modules if k.split('.')[0] in ('torch', 'torch_bridge', "
            "'transformers', 'nnsight'))\n"
            "assert not bad, bad\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr


def test_every_script_has_help():
    """``python scripts/<stage>.py --help`` works (in one process: imports are paid once)."""
    code = ("import runpy, sys\n"
            "for path in sys.argv[1:]:\n"
            "    sys.argv = [path, '--help']\n"
            "    try:\n"
            "        runpy.run_path(path, run_name='__main__')\n"
            "    except SystemExit as e:\n"
            "        assert e.code == 0, (path, e.code)\n"
            "    print('HELP-OK', path)\n")
    scripts = sorted(str(s) for s in (REPO / "scripts").glob("*.py") if not s.name.startswith("_"))
    r = subprocess.run([sys.executable, "-c", code, *scripts], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("Usage:") == len(scripts) == r.stdout.count("HELP-OK")
