"""Tables (CSV) and the plot (PNG) of the concept evaluation."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Sequence

from interplm_jax.atomic import atomic_path, atomic_write


def write_csv(path: str | os.PathLike, rows: Sequence[dict], columns: Sequence[str] | None = None) -> Path:
    """Rows of dicts as CSV (columns: the first row's keys unless given), written atomically."""
    columns = list(columns or (rows[0].keys() if rows else []))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    return atomic_write(path, buf.getvalue())


def plot_concepts_per_layer(rows: Sequence[dict], path: str | os.PathLike,
                            value: str = "n_concepts_test") -> Path:
    """Line plot of ``value`` against layer, one line per (model, kind) of the summary rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    groups: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for r in rows:
        groups.setdefault((str(r["model"]), str(r["kind"])), []).append((int(r["layer"]), float(r[value])))
    styles = {"sae": "-o", "shuffled": "--s", "random_init": "--v", "neurons": ":^"}
    for (model, kind), pts in sorted(groups.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], styles.get(kind, "-x"), label=f"{model} {kind}")
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("layer")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # layers are integers
    ax.set_ylabel({"n_concepts_test": "concepts found (test F1 > 0.5)",
                   "mean_test_f1": "mean best F1 per concept (test)"}.get(value, value))
    if value.startswith("n_"):  # a count: integer ticks from 0
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(bottom=0, top=max([1.0] + [p[1] for pts in groups.values() for p in pts]) * 1.1)
    ax.set_title({"n_concepts_test": "Concepts found per layer: SAEs vs baselines (test split)",
                  "mean_test_f1": "Mean best F1 per concept per layer (test split)"}.get(value, value))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)
    return Path(path)
