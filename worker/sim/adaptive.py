"""``music-adaptive``: how many labels an item needs, on real crowd answers (issue 14, item 5).

Every one of the 700 songs of ``music.npz`` gets labelled; the songs go in batches of 100 in a
seeded order (``default_rng([seed, 1])``). A song of a batch gets labels one at a time, each a
draw WITH replacement from the song's real answers, annotator identity kept; draw j of song i
is ``default_rng([seed, 2, i]).random(j + 1)[j]``, so every rule of a seed sees the same answer
sequence per song and a rule asking for fewer labels sees a prefix of another's. It stops when
its rule says so:

- ``fixed_k``: k labels;
- ``decided_k``: ``stop_when_decided`` of the queue (``app/queue/service.py``): stop once the
  top class leads the runner-up by more votes than the song still wants (k - labels so far),
  or at k;
- ``confident_T_kK``: stop once the lead reaches ``decided_lead(T, p, C)``
  (``app/annotations/confidence.py``) or at K labels. p is ``mean_vote_accuracy`` of
  Dawid–Skene fitted on every vote of the earlier batches, re-estimated at the start of each
  batch. Without an estimate (the first batch, or no song with two votes yet, or p at or
  below chance) the batch runs ``decided_K``, what the product plans until it can estimate p.

No model: the labels are the crowd's alone. Metrics on the final votes against the true genre:
``majority`` (ties count wrong), ``majority_tiebreak`` (seeded draw), ``dawid_skene``; labels
spent and labels per song.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from app.annotations.aggregation import aggregate
from app.annotations.confidence import decided_lead, mean_vote_accuracy
from worker.sim.music import MUSIC
from worker.sim.protocol import data_path, standardised

METHODS = ("majority", "majority_tiebreak", "dawid_skene")
RULES = (
    "fixed_1",
    "fixed_3",
    "fixed_5",
    "fixed_7",
    "decided_5",
    "decided_7",
    "confident_0.9_k5",
    "confident_0.95_k5",
    "confident_0.99_k5",
    "confident_0.9_k7",
    "confident_0.95_k7",
    "confident_0.99_k7",
)
_RULE = re.compile(r"^(fixed|decided)_(\d+)$|^confident_(0\.\d+)_k(\d+)$")


@dataclass(frozen=True)
class MusicAnswers:
    """``music.npz`` with annotator identities: what the crowd protocols draw from."""

    features: np.ndarray  # (N, D) float32, standardised
    truth: np.ndarray  # (N,) int64 true genre
    answers: np.ndarray  # (N, A) int64 class annotator a gave song i, -1 for none
    num_classes: int

    def answerers(self, song: int) -> np.ndarray:
        return np.flatnonzero(self.answers[song] >= 0)


def load_music(path: str | Path | None = None) -> MusicAnswers:
    found = data_path(str(path or MUSIC.path))
    with np.load(found) as npz:
        answers = npz["answers"].astype(np.int64)
        truth = npz["y_train"].astype(np.int64)
        features = standardised(npz["X_train"])
        num_classes = len(npz["classes"])
    return MusicAnswers(features, truth, answers, num_classes)


@dataclass(frozen=True)
class Rule:
    name: str
    kind: str  # "fixed", "decided" or "confident"
    k: int  # labels asked for at most
    target: float = 0.0  # "confident" only


def rule(name: str) -> Rule:
    match = _RULE.match(name)
    if match is None:
        raise ValueError(f"unknown rule {name!r}: fixed_K, decided_K or confident_T_kK")
    if match.group(1):
        k = int(match.group(2))
        kind = match.group(1)
        target = 0.0
    else:
        kind, target, k = "confident", float(match.group(3)), int(match.group(4))
        if not 0.5 < target < 1.0:
            raise ValueError(f"{name}: the target must lie in (0.5, 1)")
    if k < 1:
        raise ValueError(f"{name}: needs at least one label")
    return Rule(name, kind, k, target)


@dataclass(frozen=True)
class AdaptiveProtocol:
    name: str = "music-adaptive"
    data: str = MUSIC.path
    batch: int = 100
    rules: tuple[str, ...] = RULES
    seeds: tuple[int, ...] = tuple(range(10))

    def with_overrides(self, **changes: Any) -> AdaptiveProtocol:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


ADAPTIVE_PROTOCOLS = {"music-adaptive": AdaptiveProtocol()}


def lead(classes: Sequence[int] | np.ndarray, num_classes: int) -> int:
    """Votes of the top class minus the runner-up's."""
    counts = np.sort(np.bincount(np.asarray(classes, dtype=np.int64), minlength=num_classes))
    return int(counts[-1] - counts[-2])


def stop_after(song_classes: Sequence[int], r: Rule, needed: int | None, c: int) -> int:
    """How many of the song's answer sequence the rule takes (``needed``: the lead that makes
    it confident, None = decide as ``decided_K``)."""
    for n in range(1, r.k + 1):
        if r.kind == "fixed":
            continue
        gap = lead(song_classes[:n], c)
        if r.kind == "confident" and needed is not None:
            if gap >= needed:
                return n
        elif gap > r.k - n:
            return n
    return r.k


@dataclass
class AdaptiveRun:
    rule: str
    seed: int
    labels: int
    per_song: list[int]  # labels per song, in song order
    accuracy: dict[str, float]  # per method, against truth (ties wrong for majority)
    tied: int  # songs whose votes tie at the end
    batches: list[dict[str, Any]]  # per batch: p, the needed lead, labels spent
    # songs that stopped on a lead the one-coin model calls >= target confident, and how
    # many of those the majority gets right: the model's calibration on real answers
    confident: dict[str, int]
    votes: list[list[int]]  # [song, annotator, class] per vote, in the order asked


def _draws(data: MusicAnswers, seed: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, k) annotators and classes of each song's first k draws with replacement."""
    n = len(data.truth)
    who = np.empty((n, k), dtype=np.int64)
    for i in range(n):
        pool = data.answerers(i)
        u = np.random.default_rng([seed, 2, i]).random(k)
        who[i] = pool[np.minimum((u * len(pool)).astype(np.int64), len(pool) - 1)]
    return who, data.answers[np.arange(n)[:, None], who]


def _estimate(votes: list[list[int]], data: MusicAnswers) -> float:
    """Mean vote accuracy of Dawid–Skene on ``votes``; NaN without a song with two votes."""
    if not votes:
        return float("nan")
    items, annotators, classes = (np.asarray(v, dtype=np.int64) for v in zip(*votes, strict=True))
    if np.bincount(items).max() < 2:
        return float("nan")
    n, a = data.answers.shape
    ds = aggregate(
        "dawid_skene",
        items,
        annotators,
        classes,
        num_items=n,
        num_annotators=a,
        num_classes=data.num_classes,
    )
    assert ds.annotator_accuracy is not None
    return mean_vote_accuracy(ds.annotator_accuracy, np.bincount(annotators, minlength=a))


def run_adaptive(proto: AdaptiveProtocol, name: str, seed: int, data: MusicAnswers) -> AdaptiveRun:
    r = rule(name)
    n, a = data.answers.shape
    c = data.num_classes
    who, said = _draws(data, seed, r.k)
    order = np.random.default_rng([seed, 1]).permutation(n)
    votes: list[list[int]] = []
    per_song = np.zeros(n, dtype=np.int64)
    batches: list[dict[str, Any]] = []
    confident = {"songs": 0, "right": 0}
    for start in range(0, n, proto.batch):
        p = _estimate(votes, data) if r.kind == "confident" else float("nan")
        needed = decided_lead(r.target, p, c) if np.isfinite(p) else None
        spent = len(votes)
        for i in order[start : start + proto.batch]:
            per_song[i] = stop_after(said[i].tolist(), r, needed, c)
            votes.extend([int(i), int(who[i, j]), int(said[i, j])] for j in range(per_song[i]))
            asked = said[i, : per_song[i]]
            if needed is not None and lead(asked, c) >= needed:
                confident["songs"] += 1
                confident["right"] += int(np.bincount(asked).argmax() == data.truth[i])
        estimate = p if np.isfinite(p) else None  # None, not NaN: JSON and == stay plain
        batches.append({"p": estimate, "needed_lead": needed, "labels": len(votes) - spent})
    items, annotators, classes = (np.asarray(v, dtype=np.int64) for v in zip(*votes, strict=True))
    shape = {"num_items": n, "num_annotators": a, "num_classes": c}
    accuracy = {}
    tied = 0
    for method in METHODS:
        result = aggregate(method, items, annotators, classes, **shape, seed=seed)
        accuracy[method] = float(np.mean(result.label == data.truth))
        tied = int(result.tied.sum())
    return AdaptiveRun(
        name, seed, len(votes), per_song.tolist(), accuracy, tied, batches, confident, votes
    )


def _mean_std(values: Sequence[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=np.float64)
    return {"mean": float(array.mean()), "std": float(array.std())}


def summary(runs: Sequence[AdaptiveRun]) -> dict[str, dict[str, Any]]:
    """Per rule, mean and std over seeds (numpy's, ddof 0)."""
    out: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(r.rule for r in runs):
        group = [r for r in runs if r.rule == name]
        songs = len(group[0].per_song)
        out[name] = {
            "labels": _mean_std([r.labels for r in group]),
            "labels_per_song": _mean_std([r.labels / songs for r in group]),
            "tied": _mean_std([r.tied for r in group]),
            "accuracy": {m: _mean_std([r.accuracy[m] for r in group]) for m in METHODS},
            # right songs per label spent: what each label bought
            "correct_per_label": {
                m: _mean_std([r.accuracy[m] * songs / r.labels for r in group]) for m in METHODS
            },
            "confident": _calibration(group),
            "seeds": len(group),
        }
    return out


def _calibration(group: Sequence[AdaptiveRun]) -> dict[str, float] | None:
    """Over the seeds: songs stopped as confident, and the share of them the majority gets
    right (pooled); None for rules that never stop on confidence."""
    songs = sum(r.confident["songs"] for r in group)
    if not songs:
        return None
    right = sum(r.confident["right"] for r in group)
    return {"songs_per_seed": songs / len(group), "right": right / songs}


def versus_fixed(runs: Sequence[AdaptiveRun]) -> dict[str, dict[str, dict[str, float]]]:
    """Per stop rule and method: its accuracy minus the fixed-k curve of the same seed
    (linear between the fixed k run) at the same labels spent, mean / std over seeds."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name in dict.fromkeys(r.rule for r in runs if not r.rule.startswith("fixed_")):
        diffs: dict[str, list[float]] = {m: [] for m in METHODS}
        for run in (r for r in runs if r.rule == name):
            fixed = sorted(
                (r.labels, r.accuracy)
                for r in runs
                if r.rule.startswith("fixed_") and r.seed == run.seed
            )
            if len(fixed) < 2 or not fixed[0][0] <= run.labels <= fixed[-1][0]:
                continue
            for m in METHODS:
                curve = np.interp(run.labels, [f[0] for f in fixed], [f[1][m] for f in fixed])
                diffs[m].append(run.accuracy[m] - float(curve))
        if diffs[METHODS[0]]:
            out[name] = {m: _mean_std(v) for m, v in diffs.items()}
    return out


def markdown(table: dict[str, dict[str, Any]]) -> str:
    def cell(s: dict[str, float], digits: int = 4) -> str:
        return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"

    lines = [
        "| rule | labels per song | majority (ties wrong) | majority_tiebreak | dawid_skene "
        "| DS right songs per label | stopped as confident: songs per seed, majority right |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, row in table.items():
        acc = row["accuracy"]
        stops = row["confident"]
        calibration = f"{stops['songs_per_seed']:.0f}, {stops['right']:.3f}" if stops else "—"
        lines.append(
            f"| {name} | {cell(row['labels_per_song'], 2)} | {cell(acc['majority'])} "
            f"| {cell(acc['majority_tiebreak'])} | {cell(acc['dawid_skene'])} "
            f"| {cell(row['correct_per_label']['dawid_skene'], 3)} | {calibration} |"
        )
    return "\n".join(lines) + "\n"


def markdown_versus(gains: dict[str, dict[str, dict[str, float]]]) -> str:
    lines = [
        "Accuracy minus fixed k's at the same labels (linear between fixed k), paired by seed:",
        "",
        "| rule | majority (ties wrong) | majority_tiebreak | dawid_skene |",
        "| --- | --- | --- | --- |",
    ]
    for name, row in gains.items():
        cells = " | ".join(f"{row[m]['mean']:+.4f} ± {row[m]['std']:.4f}" for m in METHODS)
        lines.append(f"| {name} | {cells} |")
    return "\n".join(lines) + "\n"


def main_adaptive(args: argparse.Namespace) -> int:
    """``annoloop simulate --protocol music-adaptive``: results.json and results.md in --out."""
    if args.mode != "direct" or args.url or args.cycles is not None or args.resume:
        raise SystemExit(f"{args.protocol} runs in direct mode only, without --cycles or --resume")
    proto = ADAPTIVE_PROTOCOLS[args.protocol].with_overrides(
        rules=args.strategies, seeds=args.seeds, data=args.data
    )
    for name in proto.rules:
        rule(name)
    data = load_music(proto.data)
    t0 = time.perf_counter()
    runs = [run_adaptive(proto, name, seed, data) for seed in proto.seeds for name in proto.rules]
    table = summary(runs)
    meta = {
        "protocol": proto.name,
        "data": proto.data,
        "batch": proto.batch,
        "rules": list(proto.rules),
        "seeds": list(proto.seeds),
        "wall_s": time.perf_counter() - t0,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    gains = versus_fixed(runs)
    # every vote of 120 runs would be 4 MB; per_song and the seeds reproduce them
    kept = [{k: v for k, v in vars(r).items() if k != "votes"} for r in runs]
    doc = {"meta": meta, "summary": table, "versus_fixed": gains, "runs": kept}
    (args.out / "results.json").write_text(json.dumps(doc, separators=(",", ":")))
    text = markdown(table) + ("\n" + markdown_versus(gains) if gains else "")
    (args.out / "results.md").write_text(text)
    plot(table, args.out / "accuracy")
    print(text, end="")
    print(f"wrote {args.out}/results.json, results.md, accuracy.png/svg ({meta['wall_s']:.1f} s)")
    return 0


def plot(table: dict[str, dict[str, Any]], stem: Path) -> None:
    """Accuracy against labels per song: fixed k as a line, the stop rules as points."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True)
    for ax, method in zip(axes, ("majority_tiebreak", "dawid_skene"), strict=True):
        fixed = [
            (row["labels_per_song"]["mean"], row["accuracy"][method])
            for n, row in table.items()
            if n.startswith("fixed_")
        ]
        if fixed:
            x, acc = zip(*sorted(fixed, key=lambda f: f[0]), strict=True)
            ax.errorbar(
                x,
                [a["mean"] for a in acc],
                [a["std"] for a in acc],
                marker="o",
                color="black",
                label="fixed k",
                capsize=2,
            )
        for name, row in table.items():
            if not name.startswith("fixed_"):
                acc = row["accuracy"][method]
                ax.errorbar(
                    row["labels_per_song"]["mean"],
                    acc["mean"],
                    acc["std"],
                    xerr=row["labels_per_song"]["std"],
                    marker="s",
                    ls="",
                    capsize=2,
                    label=name,
                )
        ax.set_title(method)
        ax.set_xlabel("labels per song")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("final labels right (700 songs)")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    for path in (stem.with_suffix(".png"), stem.with_suffix(".svg")):
        fig.savefig(path, dpi=120, metadata={"Date": None} if path.suffix == ".svg" else None)
    plt.close(fig)
