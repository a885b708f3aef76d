"""Concept categorisation: Claude describes each Swiss-Prot concept, proposes functional
categories from the descriptions, and assigns every concept to one of them.

Input: concept names per model (e.g. the concepts some feature of that model's SAE detects).
Output: rows (concept, description, category, models, status) and counts per category and model.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

from interplm_jax.annotate.config import AnnotateConfig
from interplm_jax.annotate.llm import LLM, ParseError, Request
from interplm_jax.annotate.prompts import parse_json_answer, render
from interplm_jax.atomic import atomic_path
from interplm_jax.errors import InputError, InterPLMError

log = logging.getLogger(__name__)

CATEGORY_COLUMNS = ("concept", "description", "category", "models", "status")
UNASSIGNED = "unassigned"


class CategorisationError(InterPLMError):
    """Claude's category proposal could not be used, so no concept can be assigned."""


@dataclasses.dataclass(frozen=True)
class Category:
    name: str
    definition: str


def read_concepts(path: str | Path) -> list[str]:
    """Concept names from a text file (one per line) or a CSV/TSV with a ``concept`` column."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: concept list not found")
    text = path.read_text(encoding="utf-8")
    first = text.splitlines()[0] if text.strip() else ""
    if path.suffix in (".csv", ".tsv"):
        rows = list(csv.DictReader(text.splitlines(), delimiter="\t" if path.suffix == ".tsv" else ","))
        if not rows or "concept" not in rows[0]:
            raise InputError(f"{path}: expected a 'concept' column, header is {first!r}")
        names = [r["concept"].strip() for r in rows]
    else:
        names = [line.strip() for line in text.splitlines()]
    names = list(dict.fromkeys(n for n in names if n))
    if not names:
        raise InputError(f"{path}: no concept names")
    return names


def _batches(items: Sequence[str], size: int) -> list[list[str]]:
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


def _mapping_parser(names: Sequence[str]):
    def parse(text: str) -> dict[str, str]:
        value = parse_json_answer(text, dict)
        out = {str(k).strip(): " ".join(str(v).split()) for k, v in value.items()}
        if not any(n in out for n in names):
            raise ParseError("the answer names none of the concepts asked about")
        return out
    return parse


def _categories_parser(cfg: AnnotateConfig):
    def parse(text: str) -> list[Category]:
        value = parse_json_answer(text, list)
        cats: list[Category] = []
        for item in value:
            if not isinstance(item, dict) or not str(item.get("name", "")).strip():
                raise ParseError(f"category entry {item!r} has no name")
            cats.append(Category(" ".join(str(item["name"]).split()),
                                 " ".join(str(item.get("definition", "")).split())))
        names = [c.name.lower() for c in cats]
        if len(set(names)) != len(names):
            raise ParseError("duplicate category names")
        if not cfg.categorise.min_categories <= len(cats) <= cfg.categorise.max_categories:
            raise ParseError(f"{len(cats)} categories; asked for {cfg.categorise.min_categories}"
                             f"-{cfg.categorise.max_categories}")
        return cats
    return parse


def _system(prompt_dir) -> str:
    return render("concept_system", prompt_dir)


def describe_requests(concepts: Sequence[str], cfg: AnnotateConfig, prompt_dir=None):
    batches = _batches(concepts, cfg.categorise.batch_size)
    reqs = [Request(f"concepts-describe-{i}", _system(prompt_dir),
                    render("concept_describe", prompt_dir, concepts="\n".join(b)),
                    cfg.llm.max_tokens_categorise) for i, b in enumerate(batches)]
    return reqs, batches


def dry_run_requests(concepts: Sequence[str], cfg: AnnotateConfig, prompt_dir=None) -> list[Request]:
    """Every request of a categorisation, later steps with stand-in answers of typical size."""
    reqs, batches = describe_requests(concepts, cfg, prompt_dir)
    fake = {c: "x" * 80 for c in concepts}
    listing = "\n".join(f"- {c}: {fake[c]}" for c in concepts)
    reqs.append(Request("concepts-categories", _system(prompt_dir),
                        render("concept_categories", prompt_dir, concepts=listing,
                               min_categories=cfg.categorise.min_categories,
                               max_categories=cfg.categorise.max_categories),
                        cfg.llm.max_tokens_categorise))
    cat_text = "\n".join(f"- category {i}: {'x' * 80}" for i in range(cfg.categorise.max_categories))
    for i, b in enumerate(batches):
        reqs.append(Request(f"concepts-assign-{i}", _system(prompt_dir),
                            render("concept_assign", prompt_dir, categories=cat_text,
                                   concepts="\n".join(f"- {c}: {fake[c]}" for c in b)),
                            cfg.llm.max_tokens_categorise))
    return reqs


def categorise_concepts(concepts_by_model: Mapping[str, Sequence[str]], llm: LLM,
                        cfg: AnnotateConfig, prompt_dir=None,
                        ) -> tuple[list[dict[str, Any]], list[Category]]:
    """Describe, propose categories, assign. Returns (rows, categories)."""
    concepts = sorted({c for names in concepts_by_model.values() for c in names})
    models_of = {c: ";".join(m for m, names in concepts_by_model.items() if c in set(names))
                 for c in concepts}

    reqs, batches = describe_requests(concepts, cfg, prompt_dir)
    described: dict[str, str] = {}
    for o, batch in zip(llm.run(reqs, [_mapping_parser(b) for b in batches],
                                desc="concept descriptions"), batches):
        if o.ok:
            described.update({c: o.value[c] for c in batch if o.value.get(c)})
    if not described:
        raise CategorisationError("no concept could be described (see the warnings above)")

    listing = "\n".join(f"- {c}: {described[c]}" for c in concepts if c in described)
    req = Request("concepts-categories", _system(prompt_dir),
                  render("concept_categories", prompt_dir, concepts=listing,
                         min_categories=cfg.categorise.min_categories,
                         max_categories=cfg.categorise.max_categories),
                  cfg.llm.max_tokens_categorise)
    (o,) = llm.run([req], _categories_parser(cfg), desc="concept categories")
    if not o.ok:
        raise CategorisationError(f"the category proposal is unusable: {o.error}")
    categories: list[Category] = o.value
    canonical = {c.name.lower(): c.name for c in categories}

    cat_text = "\n".join(f"- {c.name}: {c.definition}" for c in categories)
    todo = [c for c in concepts if c in described]
    assign_batches = _batches(todo, cfg.categorise.batch_size)
    assign_reqs = [Request(f"concepts-assign-{i}", _system(prompt_dir),
                           render("concept_assign", prompt_dir, categories=cat_text,
                                  concepts="\n".join(f"- {c}: {described[c]}" for c in b)),
                           cfg.llm.max_tokens_categorise) for i, b in enumerate(assign_batches)]
    assigned: dict[str, str] = {}
    for o, batch in zip(llm.run(assign_reqs, [_mapping_parser(b) for b in assign_batches],
                                desc="concept assignment"), assign_batches):
        if o.ok:
            for c in batch:
                cat = canonical.get(str(o.value.get(c, "")).strip().lower())
                if cat is None:
                    log.warning("concept %s: no valid category in the answer (%r)", c, o.value.get(c))
                else:
                    assigned[c] = cat

    rows = []
    for c in concepts:
        status = "ok" if c in assigned else ("unassigned" if c in described else "failed")
        rows.append({"concept": c, "description": described.get(c, ""),
                     "category": assigned.get(c, UNASSIGNED), "models": models_of[c],
                     "status": status})
    log.info("categorised %d concepts into %d categories (%d without a category)", len(rows),
             len(categories), sum(r["status"] != "ok" for r in rows))
    return rows, categories


def category_counts(rows: Sequence[Mapping[str, Any]], models: Sequence[str],
                    categories: Sequence[Category]) -> dict[str, dict[str, int]]:
    """Category -> model -> number of that model's concepts in the category."""
    names = [c.name for c in categories] + [UNASSIGNED]
    counts = {n: {m: 0 for m in models} for n in names}
    for r in rows:
        for m in filter(None, r["models"].split(";")):
            counts[r["category"]][m] += 1
    if not any(counts[UNASSIGNED].values()):
        del counts[UNASSIGNED]
    return counts


def plot_category_counts(counts: Mapping[str, Mapping[str, int]], path: str | Path) -> None:
    """Horizontal grouped bars: concepts per category, one bar per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cats = list(counts)
    models = list(next(iter(counts.values()))) if counts else []
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(cats) + 1.5), dpi=150)
    h = 0.8 / max(len(models), 1)
    y = np.arange(len(cats))
    for j, m in enumerate(models):
        ax.barh(y + j * h - 0.4 + h / 2, [counts[c][m] for c in cats], height=h, label=m)
    ax.set_yticks(y, cats)
    ax.invert_yaxis()
    ax.set_xlabel("concepts")
    ax.legend(frameon=False, title="model")
    ax.set_title("Swiss-Prot concepts per category")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)
