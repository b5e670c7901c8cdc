"""Summaries of simulated runs: the area under the budget curve and accuracy-vs-labels plots.

matplotlib is imported only inside ``plot`` (the ``sim`` extra), never by the service.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from worker.sim.record import RunRecord


def aubc(labels: Sequence[float], accuracy: Sequence[float]) -> float:
    """Trapezoid area under accuracy vs labels, divided by the label range.

    A constant accuracy ``a`` gives ``a``; accuracies in [0, 1] give a value in [0, 1]. One
    point has no range: its accuracy is returned.
    """
    x = np.asarray(labels, dtype=np.float64)
    y = np.asarray(accuracy, dtype=np.float64)
    if x.shape != y.shape or x.size == 0:
        raise ValueError("labels and accuracy must be equally long and non-empty")
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    span = x[-1] - x[0]
    if span == 0:
        return float(y.mean())
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2) / span)


def curves(runs: Sequence[RunRecord]) -> dict[str, dict[str, list[float]]]:
    """Per strategy: labels, mean and std (over seeds) of accuracy, and AUBC mean / std."""
    by: defaultdict[str, list[RunRecord]] = defaultdict(list)
    for run in runs:
        by[run.strategy].append(run)
    out: dict[str, dict[str, list[float]]] = {}
    for strategy, group in by.items():
        labels = [c.labels for c in group[0].cycles]
        if any([c.labels for c in r.cycles] != labels for r in group):
            raise ValueError(f"{strategy}: runs disagree on the label counts of their cycles")
        acc = np.array([[c.accuracy for c in r.cycles] for r in group])
        areas = np.array([aubc(labels, row) for row in acc])
        out[strategy] = {
            "labels": [float(v) for v in labels],
            "mean": acc.mean(axis=0).tolist(),
            "std": acc.std(axis=0).tolist(),
            "aubc": [float(areas.mean()), float(areas.std())],
            "seeds": [float(r.seed) for r in group],
        }
    return out


def write_json(runs: Sequence[RunRecord], path: Path, meta: dict[str, Any]) -> dict[str, Any]:
    summary = curves(runs)
    doc = {
        "meta": meta,
        "aubc": {s: {"mean": c["aubc"][0], "std": c["aubc"][1]} for s, c in summary.items()},
        "curves": summary,
        "runs": [r.to_json() for r in runs],
    }
    path.write_text(json.dumps(doc, indent=1))
    return doc


def plot(
    runs: Sequence[RunRecord],
    stem: Path,
    title: str,
    *,
    xlabel: str = "labels",
    ylabel: str = "test accuracy",
    areas: Mapping[str, float] | None = None,
    area_name: str = "AUBC",
) -> list[Path]:
    """``stem``.png and ``stem``.svg: mean accuracy vs labels, a ±1 std band over seeds.

    The legend shows each strategy's area from ``curves``, or ``areas[strategy]`` when given
    (label cleaning: the per-run AUC over each run's own budget).
    """
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for strategy, c in sorted(curves(runs).items()):
        x, m, sd = np.array(c["labels"]), np.array(c["mean"]), np.array(c["std"])
        area = areas[strategy] if areas is not None else c["aubc"][0]
        marker = "o" if len(x) <= 30 else None  # dense cleaning curves read better as lines
        label = f"{strategy} ({area_name} {area:.3f})"
        (line,) = ax.plot(x, m, marker=marker, ms=3, label=label)
        ax.fill_between(x, m - sd, m + sd, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    for p in paths:
        # no date in the SVG: equal runs give byte-identical files
        fig.savefig(p, dpi=120, metadata={"Date": None} if p.suffix == ".svg" else None)
    plt.close(fig)
    return paths


def markdown_table(doc: Mapping[str, Any]) -> str:
    """The acquisition results of ``write_json``'s ``doc`` as a markdown table, best AUBC
    first: AUBC mean ± std over seeds; AUBC minus random's on the same seed, mean ± std (the
    runs of a seed share the initial labels, so the pairing removes the start's spread);
    accuracy at the first, middle and last label count; seconds per cycle (train + evaluate +
    score, mean over every cycle of every run)."""
    areas = _areas_by_seed(doc["runs"])
    base = areas.get("random", {})
    rows = []
    for strategy, c in doc["curves"].items():
        labels, mean, std = c["labels"], c["mean"], c["std"]
        at = [0, len(labels) // 2, len(labels) - 1]
        cycles = [cy for r in doc["runs"] if r["strategy"] == strategy for cy in r["cycles"]]
        per_cycle = np.mean([sum(cy["timings"].get(k, 0.0) for k in _STEPS) for cy in cycles])
        diffs = [a - base[seed] for seed, a in areas[strategy].items() if seed in base]
        paired = f"{np.mean(diffs):+.4f} ± {np.std(diffs):.4f}" if diffs else "-"
        rows.append(
            (
                -c["aubc"][0],
                f"| {strategy} | {len(c['seeds'])} | {c['aubc'][0]:.4f} ± {c['aubc'][1]:.4f} | "
                f"{paired} | "
                + " | ".join(f"{mean[i]:.3f} ± {std[i]:.3f}" for i in at)
                + f" | {per_cycle:.2f} |",
            )
        )
    first = doc["curves"][next(iter(doc["curves"]))]["labels"] if doc["curves"] else [0.0] * 3
    picks = [first[0], first[len(first) // 2], first[-1]]
    head = (
        "| strategy | seeds | AUBC (mean ± std) | AUBC - random (paired) | "
        + " | ".join(f"accuracy at {int(v)}" for v in picks)
        + " | s per cycle |\n|"
        + " --- |" * 8
    )
    return "\n".join([head, *(row for _, row in sorted(rows))]) + "\n"


def _areas_by_seed(runs: Sequence[Mapping[str, Any]]) -> dict[str, dict[int, float]]:
    out: defaultdict[str, dict[int, float]] = defaultdict(dict)
    for r in runs:
        labels = [c["labels"] for c in r["cycles"]]
        out[r["strategy"]][int(r["seed"])] = aubc(labels, [c["accuracy"] for c in r["cycles"]])
    return out


_STEPS = ("train_s", "evaluate_s", "score_s")
