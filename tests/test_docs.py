"""Every command shown in README.md and docs/*.md works as written.

The shell commands of the fenced code blocks (```, ```bash, ```sh, ```shell) are read from the
markdown, lines joined at a trailing backslash, ``NAME=value`` lines substituted into the lines
after them (``$S``), comments dropped. Then, in document order:

- a command on the demo (it names ``out/demo`` or ``configs/demo.yaml``) **runs**, in a sandbox
  directory laid out as the repository: ``out/demo`` a copy of the demo study (the session
  fixture, test sizes), ``configs/demo.yaml`` its test-size config, ``data/`` and the scripts of
  the repository; it must exit 0;
- any other ``python scripts/...`` or ``benchmarks/...`` command (paper-scale paths, hub models,
  placeholders such as ``STORE``) is **parsed** by its script's own click command: the
  sub-command and every option must exist, values must convert (choices, numbers) and required
  options be there; whether input files exist is left to a real run;
- ``make <target>``: the target exists in the Makefile.
``[...]`` marks optional parts in the docs: parsed with the brackets dropped, never run.
"""

from __future__ import annotations

import copy
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

from _study import _env
from interplm_jax.cli import load_script

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELL_FENCES = {"", "bash", "sh", "shell"}
DEMO = re.compile(r"(^|\s)(out/demo\b|configs/demo\.yaml\b)")
PYTHONS = {"python", "python3", ".venv/bin/python"}


@dataclass(frozen=True)
class DocCommand:
    doc: str     # path relative to the repository
    line: int    # first line of the command in the file
    text: str    # as shown, continuation lines joined

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}: {self.text}"


def doc_commands(path: Path) -> list[DocCommand]:
    """The commands (``python ...``, ``.venv/bin/python ...``, ``make ...``) of the shell blocks."""
    out: list[DocCommand] = []
    lines = path.read_text().splitlines()
    fence, variables, i = None, {}, 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            fence = None if fence is not None else line[3:].strip()
            variables = {}
            i += 1
            continue
        start, text = i + 1, line
        while text.endswith("\\") and i + 1 < len(lines):
            i += 1
            text = text[:-1] + " " + lines[i].strip()
        i += 1
        if fence not in SHELL_FENCES:
            continue
        first = text.split(maxsplit=1)[0] if text.strip() else ""
        if not (first in PYTHONS or first == "make" or re.fullmatch(r"[A-Za-z_]\w*=\S*", first)):
            continue  # a layout, a formula, another tool
        for name, value in variables.items():
            text = re.sub(rf"\${{?{name}\b}}?", value, text)
        words = shlex.split(text, comments=True)
        if len(words) == 1 and re.fullmatch(r"[A-Za-z_]\w*=\S*", words[0]):
            name, value = words[0].split("=", 1)
            variables[name] = value
            continue
        if words and (words[0] in PYTHONS and words[1:2] and words[1].endswith(".py")
                      or words[0] == "make"):
            shown = re.sub(r"\s+", " ", text.split(" #")[0].strip())
            out.append(DocCommand(str(path.relative_to(REPO)), start, shown))
    return out


ALL = {str(p.relative_to(REPO)): doc_commands(p) for p in DOCS}


def test_the_docs_show_commands_of_both_kinds():
    """The reader finds the commands (a parser that finds none would pass everything)."""
    every = [c for cs in ALL.values() for c in cs]
    assert len(every) > 40
    assert sum(bool(DEMO.search(c.text)) for c in every) >= 5
    assert any(c.text.startswith("python scripts/evaluate_concepts.py labels") for c in every)  # $S


def test_the_check_fails_broken_commands(tmp_path):
    """An unknown option, a bad choice, a missing required option, an unknown sub-command or
    script, a demo command on a path the demo does not write: each is reported."""
    (tmp_path / "scripts").symlink_to(REPO / "scripts")
    broken = {"python scripts/fasta.py sample IN.fasta --n 5 --out O --bogus 1": "No such option",
              "python scripts/export.py --sweep S --format onnx --out D": "'onnx' is not one of",
              "python scripts/fasta.py sample IN.fasta --out O": "Missing option '--n'",
              "python scripts/fasta.py shuffle IN.fasta": "No such command 'shuffle'",
              "python scripts/nothere.py --x 1": "scripts/nothere.py does not exist",
              "python scripts/fasta.py check out/demo/sae/x.fasta": "exit 2",
              "make nothere": "no Makefile target ['nothere']"}
    for text, why in broken.items():
        assert why in (check(DocCommand("x.md", 1, text), tmp_path) or ""), text
    assert check(DocCommand("x.md", 1, "python scripts/fasta.py sample IN.fasta --n 5 --out O "
                                      "[--seed 3]"), tmp_path) is None


def _relaxed(cmd: click.Command) -> click.Command:
    """The command with existence checks of its paths off (placeholders such as ``STORE``)."""
    cmd = copy.copy(cmd)
    params = []
    for p in cmd.params:
        if isinstance(p.type, click.Path) and p.type.exists:
            p = copy.copy(p)
            p.type = click.Path(file_okay=p.type.file_okay, dir_okay=p.type.dir_okay)
        params.append(p)
    cmd.params = params
    if isinstance(cmd, click.Group):
        cmd.commands = {k: _relaxed(v) for k, v in cmd.commands.items()}
    return cmd


def _click_command(script: Path) -> click.Command:
    """The script's top-level click command: its group, or its one command."""
    sys.path.insert(0, str(script.parent))  # as `python SCRIPT` does (benchmarks/_common.py)
    try:
        module = load_script(script)
    finally:
        sys.path.remove(str(script.parent))
    commands = [v for v in vars(module).values() if isinstance(v, click.Command)]
    inner = {id(c) for g in commands if isinstance(g, click.Group) for c in g.commands.values()}
    top = [c for c in commands if id(c) not in inner]
    assert len(top) == 1, f"{script}: cannot tell its click command among {[c.name for c in top]}"
    return top[0]


def parse(argv: list[str]) -> None:
    """Parse ``python SCRIPT ARGS`` with the script's click command (nothing runs)."""
    script = REPO / argv[1]
    assert script.is_file(), f"{argv[1]} does not exist"
    cmd, args, parent = _relaxed(_click_command(script)), argv[2:], None
    while True:
        try:
            ctx = cmd.make_context(script.name, list(args), parent=parent)
        except click.exceptions.Exit:  # --help
            return
        if not isinstance(cmd, click.Group):
            return
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
        _, cmd, args = cmd.resolve_command(ctx, rest)
        parent = ctx


@pytest.fixture(scope="module")
def sandbox(demo_study, tmp_path_factory) -> Path:
    """A directory laid out as the repository with the demo study at out/demo."""
    root = tmp_path_factory.mktemp("docs")
    for name in ("scripts", "benchmarks", "data", "Makefile"):
        (root / name).symlink_to(REPO / name)
    shutil.copytree(REPO / "configs", root / "configs")
    shutil.copy(demo_study.config, root / "configs" / "demo.yaml")
    shutil.copytree(demo_study.out, root / "out" / "demo", symlinks=True)
    return root


def run(argv: list[str], sandbox: Path) -> str | None:
    """Run a demo command in the sandbox; None when it exits 0, else its output's end."""
    proc = subprocess.run([sys.executable, *argv[1:]], cwd=sandbox, capture_output=True,
                          text=True, env={**_env(), "PYTHONPATH": os.pathsep.join(
                              filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))},
                          timeout=600)
    if proc.returncode == 0:
        return None
    return f"exit {proc.returncode}:\n" + (proc.stdout + proc.stderr)[-2000:]


def check(command: DocCommand, sandbox: Path) -> str | None:
    """None when the command works as written, else what went wrong."""
    optional = "[" in command.text
    argv = shlex.split(command.text.replace("[", " ").replace("]", " "))
    if argv[0] == "make":
        targets = re.findall(r"^([\w.-]+)\s*:", (REPO / "Makefile").read_text(), re.M)
        missing = [t for t in argv[1:] if t not in targets]
        return f"no Makefile target {missing}" if missing else None
    if DEMO.search(command.text) and not optional:
        return run(argv, sandbox)
    try:
        parse(argv)
    except (click.UsageError, click.BadParameter, AssertionError) as e:
        return f"{type(e).__name__}: {e.format_message() if isinstance(e, click.ClickException) else e}"
    return None


@pytest.mark.slow
@pytest.mark.parametrize("doc", [d for d, cs in ALL.items() if cs])
def test_doc_commands_work_as_written(doc, sandbox):
    failures = [f"{c.where}\n  -> {why}" for c in ALL[doc] if (why := check(c, sandbox))]
    assert not failures, "\n".join(failures)
