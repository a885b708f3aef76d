"""Prompt templates (files in ``prompts/``, ``$name`` placeholders), tables, and answer parsers.

Templates are package data; a directory given as ``prompt_dir`` overrides any of them by file
name, so a user can change the wording without touching code.
"""

from __future__ import annotations

import importlib.resources
import json
import math
import re
import string
from pathlib import Path
from typing import Any, Sequence

from interplm_jax.annotate.llm import ParseError
from interplm_jax.annotate.metadata import ProteinInfo
from interplm_jax.errors import InputError

TEMPLATES = ("describe_system", "describe", "validate_system", "validate", "concept_system",
             "concept_describe", "concept_categories", "concept_assign")


def load_template(name: str, prompt_dir: str | Path | None = None) -> string.Template:
    """The template ``<name>.txt``, from ``prompt_dir`` when it has one, else the package's."""
    if prompt_dir is not None and (Path(prompt_dir) / f"{name}.txt").is_file():
        text = (Path(prompt_dir) / f"{name}.txt").read_text()
    else:
        text = (importlib.resources.files("interplm_jax.annotate") / "prompts" / f"{name}.txt"
                ).read_text()
    return string.Template(text.rstrip("\n"))


def render(name: str, prompt_dir: str | Path | None = None, **values: Any) -> str:
    """Fill template ``name``; a placeholder without a value is an :class:`InputError`."""
    try:
        return load_template(name, prompt_dir).substitute(**values)
    except KeyError as e:
        raise InputError(f"prompt template {name}.txt uses ${e.args[0]}, which has no value; "
                         f"available: {sorted(values)}") from None
    except ValueError as e:
        raise InputError(f"prompt template {name}.txt: {e}") from None


def quantize(a: float, n_bins: int = 10) -> float:
    """Activation rounded to the bin width (0.1), within [0, 1]; nonzero stays nonzero."""
    q = round(min(max(float(a), 0.0), 1.0) * n_bins) / n_bins
    return 1.0 / n_bins if q == 0 and a > 0 else q


def _cell(text: str) -> str:
    return " ".join(str(text).replace("|", "/").split())


def residues_text(sequence: str, positions: Sequence[int], n_activated: int) -> str:
    """``H78, H80, C122 (+3 more)`` from 0-based positions; ``-`` when none."""
    if len(positions) == 0:
        return "-"
    text = ", ".join(f"{sequence[p]}{p + 1}" for p in positions)
    extra = n_activated - len(positions)
    return f"{text} (+{extra} more)" if extra > 0 else text


def description_table(rows: Sequence[tuple[ProteinInfo, float, str]]) -> str:
    """Markdown table of (protein, max activation, activated residues) rows."""
    lines = ["| Protein | Name | Organism | Length | Max activation | Activated residues | "
             "UniProt annotations |", "|---|---|---|---|---|---|---|"]
    for info, act, residues in rows:
        lines.append(f"| {info.id} | {_cell(info.name)} | {_cell(info.organism)} | {info.length} "
                     f"| {quantize(act):.1f} | {residues} | {_cell(info.annotations)} |")
    return "\n".join(lines)


def validation_table(proteins: Sequence[ProteinInfo], max_sequence_chars: int) -> str:
    """One block per protein: id, name, organism, length, annotations, sequence."""
    blocks = []
    for info in proteins:
        seq = info.sequence
        if len(seq) > max_sequence_chars:
            seq = seq[:max_sequence_chars] + "..."
        blocks.append(f"Protein id: {info.id}\nName: {_cell(info.name)}\nOrganism: "
                      f"{_cell(info.organism)}\nLength: {info.length}\nUniProt annotations: "
                      f"{_cell(info.annotations)}\nSequence: {seq}")
    return "\n\n".join(blocks)


# -- answer parsers -----------------------------------------------------------------------------
def _tag(text: str, tag: str) -> str:
    m = re.findall(rf"<{tag}>(.*?)</{tag}>", text, flags=re.DOTALL | re.IGNORECASE)
    if not m:
        raise ParseError(f"no <{tag}>...</{tag}> in the answer")
    value = m[-1].strip()
    if not value:
        raise ParseError(f"<{tag}> is empty")
    return value


def parse_description(text: str) -> dict[str, str]:
    """``{"description", "summary"}`` from a description answer."""
    return {"description": _tag(text, "description"), "summary": " ".join(_tag(text, "summary").split())}


_PRED_LINE = re.compile(r"^\s*[-*]?\s*([^\s:]+)\s*[:=\t]\s*([-+0-9.eE]+)\s*$")


def parse_predictions(text: str, ids: Sequence[str]) -> dict[str, float]:
    """Protein id -> predicted activation in [0, 1]; every id exactly once, nothing else."""
    block = _tag(text, "predictions")
    wanted = set(ids)
    out: dict[str, float] = {}
    for line in block.splitlines():
        if not line.strip():
            continue
        m = _PRED_LINE.match(line)
        if not m:
            raise ParseError(f"prediction line {line.strip()!r} is not 'PROTEIN_ID: value'")
        pid, raw = m.groups()
        if pid not in wanted:
            raise ParseError(f"prediction for unknown protein {pid!r}")
        if pid in out:
            raise ParseError(f"two predictions for protein {pid}")
        try:
            value = float(raw)
        except ValueError:
            raise ParseError(f"prediction {raw!r} for {pid} is not a number") from None
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise ParseError(f"prediction {value} for {pid} is outside [0, 1]")
        out[pid] = value
    missing = [p for p in ids if p not in out]
    if missing:
        raise ParseError(f"no prediction for {len(missing)} protein(s), e.g. {missing[0]}")
    return out


def parse_json_answer(text: str, kind: type) -> Any:
    """The JSON inside ``<answer>`` tags (a code fence around it is tolerated), of type ``kind``."""
    block = _tag(text, "answer")
    block = re.sub(r"^```(?:json)?\s*|\s*```$", "", block.strip())
    try:
        value = json.loads(block)
    except json.JSONDecodeError as e:
        raise ParseError(f"<answer> is not valid JSON: {e}") from None
    if not isinstance(value, kind):
        raise ParseError(f"<answer> holds a JSON {type(value).__name__}, expected {kind.__name__}")
    return value
