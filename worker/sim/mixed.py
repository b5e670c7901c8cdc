"""``music-mixed``: one mixed queue (ActiveLab) against separate new-label and relabel budgets.

On ``music.npz`` (700 songs, 44 workers, real answers with annotator ids, true genre):

- start: ``initial`` songs (``default_rng([seed, 1])``) with ONE real answer each; the rest
  unlabelled. A song's answers are used in a seeded order (``default_rng([seed, 3])``, one
  permutation of its annotators per song): its first label is the first of that order, its
  next label the next one, so labels come from distinct annotators, never repeat a
  (song, annotator) pair, and every selector of a seed sees the same answers for the same song.
  A song whose answers are all used is not pickable.
- rounds: ``rounds`` x ``batch`` labels; each round picks ``batch`` distinct pickable songs
  and gives each one more label.
- model, every round (and once after the last): K fold models (``worker.ml.crossfit``) give
  held-out probabilities of the labelled songs, a model on all labelled songs gives those of the
  unlabelled ones; soft targets = each song's vote shares. Folds are dealt over all 700 songs
  once per seed, so a fold model fine-tuned round after round never sees its own fold even as
  songs join. ``refit = "finetune"``: round 0 trains fresh models for the full epochs, later
  rounds continue from the last round's models for ``TrainConfig.for_finetuning`` epochs.
- selectors: ``new_random`` / ``new_entropy`` (unlabelled songs only: random, highest
  predictive entropy), ``separate`` (25 new by entropy + 25 relabels by held-out CE - H,
  ``worker.ml.cleaning``), ``separate_40_10``, ``mixed_random`` (any pickable song) and
  ``activelab`` (the lowest ``worker.ml.activelab`` scores over every pickable song). When one
  side runs short (the new-only selectors run out of unlabelled songs in round 12), the rest
  of the round goes to the other side: random relabels for ``new_*``.
- metrics after each round, against the truth: ``all_<method>``, the label a user exports for
  all 700 songs: aggregated from the votes where there are some (``majority_tiebreak`` with the
  held-out probabilities, or ``dawid_skene``), else the model's argmax; ``voted_<method>``,
  the same on the songs with votes only; ``voted`` (how many); ``labels`` spent beyond the
  start. AUC: trapezoid area over [0, rounds * batch] / (rounds * batch).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from app.annotations.aggregation import aggregate
from worker.ml.activelab import activelab_scores
from worker.ml.cleaning import cleaning_scores
from worker.ml.crossfit import crossfit_proba, fold_ids, fold_seed
from worker.ml.data import ArrayDataset, LoaderPool
from worker.ml.device import resolve_device
from worker.ml.evaluation import predict_proba
from worker.ml.models import Classifier, build_model
from worker.ml.spec import ModelSpec
from worker.ml.training import TrainConfig, train
from worker.pipeline.common import SCORE_BATCH
from worker.sim.adaptive import MusicAnswers, load_music
from worker.sim.music import MUSIC, MUSIC_PROTOCOLS
from worker.sim.protocol import cycle_seed
from worker.sim.record import CycleRecord, RunRecord
from worker.sim.report import aubc, plot

SELECTORS = (
    "new_random",
    "new_entropy",
    "separate",
    "separate_40_10",
    "mixed_random",
    "activelab",
)
NEW_SHARE = {"separate": 25, "separate_40_10": 40}  # new songs per 50; scaled to ``batch``
METRICS = (
    "all_majority_tiebreak",
    "all_dawid_skene",
    "voted_majority_tiebreak",
    "voted_dawid_skene",
)
BASELINES = ("separate", "new_entropy")

_CLEAN = MUSIC_PROTOCOLS["music-clean"].model
# music-clean's MLP and hparams, 30 epochs: 13 trainings of 6 models per run stay cheap
_MLP = {**_CLEAN, "hparams": {**_CLEAN["hparams"], "epochs": 30}}


@dataclass(frozen=True)
class MixedProtocol:
    name: str = "music-mixed"
    data: str = MUSIC.path
    initial: int = 150
    batch: int = 50
    rounds: int = 12
    model: dict[str, Any] = field(default_factory=lambda: dict(_MLP))
    folds: int = 5
    refit: str = "finetune"  # or "retrain": fresh models for the full epochs every round
    selectors: tuple[str, ...] = SELECTORS
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)

    def with_overrides(self, **changes: Any) -> MixedProtocol:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


MIXED_PROTOCOLS = {"music-mixed": MixedProtocol()}


class Votes:
    """The labels given so far: each song's answers in its seeded order, a prefix used."""

    def __init__(self, data: MusicAnswers, seed: int) -> None:
        rng = np.random.default_rng([seed, 3])
        self.data = data
        self.order = [rng.permutation(data.answerers(i)) for i in range(len(data.truth))]
        self.used = np.zeros(len(data.truth), dtype=np.int64)
        self.triples: list[tuple[int, int, int]] = []

    def add(self, song: int) -> None:
        if not self.pickable()[song]:
            raise ValueError(f"song {song} has no unused answer")
        annotator = int(self.order[song][self.used[song]])
        self.used[song] += 1
        self.triples.append((song, annotator, int(self.data.answers[song, annotator])))

    def labelled(self) -> np.ndarray:
        return self.used > 0

    def pickable(self) -> np.ndarray:
        return self.used < np.array([len(o) for o in self.order])

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        items, annotators, classes = np.asarray(self.triples, dtype=np.int64).reshape(-1, 3).T
        return items, annotators, classes

    def counts(self) -> np.ndarray:
        items, _, classes = self.arrays()
        out = np.zeros((len(self.used), self.data.num_classes))
        np.add.at(out, (items, classes), 1.0)
        return out


class RoundModel:
    """Held-out probabilities of the labelled songs and the full model's of every song."""

    def __init__(self, proto: MixedProtocol, data: MusicAnswers, seed: int) -> None:
        self.spec = ModelSpec.from_dict({**proto.model, "num_classes": data.num_classes})
        self.config = TrainConfig.from_hparams(self.spec.hparams)
        self.refit = proto.refit
        self.features = data.features
        self.seed = seed
        self.folds = fold_ids(len(data.truth), proto.folds, seed)
        self.device = resolve_device()
        self.fold_models: list[Classifier] = []
        self.full: Classifier | None = None
        self.rounds = 0
        self.train_s = 0.0

    def fit(self, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, C) held-out probabilities (NaN rows where unlabelled), (N, C) full model's."""
        t0 = time.perf_counter()
        seed = cycle_seed(self.seed, self.rounds)
        config = self.config
        if self.full is not None and self.refit == "finetune":
            config = config.for_finetuning()
        else:
            self.fold_models = [
                build_model(self.spec, fold_seed(seed, k)) for k in range(int(self.folds.max()) + 1)
            ]
            self.full = build_model(self.spec, seed)
        rows = np.flatnonzero(counts.sum(axis=1) > 0)
        targets = counts[rows] / counts[rows].sum(axis=1, keepdims=True)
        dataset = ArrayDataset(self.features[rows], targets, input_shape=self.spec.input_shape)
        heldout = np.full(counts.shape, np.nan)
        heldout[rows] = crossfit_proba(
            self.fold_models.__getitem__,
            dataset,
            self.folds[rows],
            config,
            seed=seed,
            device=self.device,
            batch_size=SCORE_BATCH,
        )
        assert self.full is not None
        train(self.full, dataset, config, seed=seed, device=self.device)
        everything = ArrayDataset(self.features, input_shape=self.spec.input_shape)
        pool = LoaderPool(everything, batch_size=SCORE_BATCH)
        full = predict_proba(self.full, pool, self.device).numpy().astype(np.float64)
        self.rounds += 1
        self.train_s += time.perf_counter() - t0
        return heldout, full


def entropy(probs: np.ndarray) -> np.ndarray:
    p = np.clip(probs, 1e-12, None)
    return np.asarray(-(probs * np.log(p)).sum(axis=1))


def _fill(first: np.ndarray, quota: int, second: np.ndarray, batch: int) -> np.ndarray:
    """``quota`` of ``first`` (ranked), the rest from ``second`` (ranked), then more of
    ``first`` if ``second`` runs short."""
    head = first[:quota]
    tail = second[: batch - len(head)]
    more = first[quota : quota + batch - len(head) - len(tail)]
    return np.concatenate([head, tail, more]).astype(np.int64)


def select(
    selector: str,
    votes: Votes,
    heldout: np.ndarray,
    full: np.ndarray,
    batch: int,
    seed: int,
) -> np.ndarray:
    """The songs that get one more label this round, in rank order."""
    pickable = votes.pickable()
    labelled = votes.labelled()
    new = np.flatnonzero(pickable & ~labelled)
    old = np.flatnonzero(pickable & labelled)
    rng = np.random.default_rng([seed, 5, len(votes.triples)])
    by_entropy = new[np.argsort(-entropy(full[new]), kind="stable")]
    if selector == "new_random":
        return _fill(rng.permutation(new), batch, rng.permutation(old), batch)
    if selector == "new_entropy":
        return _fill(by_entropy, batch, rng.permutation(old), batch)
    if selector in NEW_SHARE:
        ce_h = cleaning_scores("ce_minus_entropy", votes.counts()[old], heldout[old])
        by_ce_h = old[np.argsort(-ce_h, kind="stable")]
        quota = round(batch * NEW_SHARE[selector] / 50)
        return _fill(by_entropy, quota, by_ce_h, batch)
    if selector == "mixed_random":
        return rng.permutation(np.flatnonzero(pickable))[:batch].astype(np.int64)
    if selector == "activelab":
        score = activelab(votes, heldout, full, seed)
        ranked = np.argsort(score, kind="stable")
        return ranked[pickable[ranked]][:batch].astype(np.int64)
    raise ValueError(f"unknown selector {selector!r}; choose from {list(SELECTORS)}")


def activelab(votes: Votes, heldout: np.ndarray, full: np.ndarray, seed: int) -> np.ndarray:
    """(N,) ActiveLab scores: labelled songs on held-out probabilities and every vote,
    unlabelled ones on the full model's."""
    labelled = votes.labelled()
    rows = np.flatnonzero(labelled)
    position = np.cumsum(labelled) - 1
    items, annotators, classes = votes.arrays()
    scored, unscored = activelab_scores(
        position[items],
        annotators,
        classes,
        num_annotators=votes.data.answers.shape[1],
        probs=heldout[rows],
        probs_unlabelled=full[~labelled],
        seed=seed,
    )
    out = np.empty(len(labelled))
    out[rows] = scored
    out[~labelled] = unscored
    return out


def measure(votes: Votes, heldout: np.ndarray, full: np.ndarray, seed: int) -> dict[str, float]:
    data = votes.data
    labelled = votes.labelled()
    n, a = data.answers.shape
    probs = np.where(labelled[:, None], heldout, full)
    out: dict[str, float] = {"voted": float(labelled.sum())}
    for method in ("majority_tiebreak", "dawid_skene"):
        label = aggregate(
            method,
            *votes.arrays(),
            num_items=n,
            num_annotators=a,
            num_classes=data.num_classes,
            model_probs=probs,
            seed=seed,
        ).label
        exported = np.where(labelled, label, full.argmax(axis=1))
        right = exported == data.truth
        out[f"all_{method}"] = float(right.mean())
        out[f"voted_{method}"] = float(right[labelled].mean())
    unvoted = ~labelled
    if unvoted.any():  # absent, not NaN, once every song has a vote
        out["model_unlabelled"] = float(
            np.mean(full.argmax(axis=1)[unvoted] == data.truth[unvoted])
        )
    return out


@dataclass
class MixedRun:
    selector: str
    seed: int
    rounds: list[dict[str, float]]  # per round: labels, voted, metrics, new / relabels picked
    picks: list[list[int]]  # per round, the songs picked, in rank order
    votes: list[tuple[int, int, int]]  # (song, annotator, class), in the order given
    timings: dict[str, float]

    def auc(self, metric: str) -> float:
        return aubc([r["labels"] for r in self.rounds], [r[metric] for r in self.rounds])


def run_mixed(proto: MixedProtocol, selector: str, seed: int, data: MusicAnswers) -> MixedRun:
    if selector not in SELECTORS:
        raise ValueError(f"unknown selector {selector!r}; choose from {list(SELECTORS)}")
    t0 = time.perf_counter()
    votes = Votes(data, seed)
    start = np.random.default_rng([seed, 1]).choice(len(data.truth), proto.initial, replace=False)
    for song in start:
        votes.add(int(song))
    model = RoundModel(proto, data, seed)
    rounds: list[dict[str, float]] = []
    picks: list[list[int]] = []
    for r in range(proto.rounds + 1):
        heldout, full = model.fit(votes.counts())
        row = {
            "labels": float(len(votes.triples) - proto.initial),
            **measure(votes, heldout, full, seed),
        }
        rounds.append(row)
        if r == proto.rounds:
            break
        chosen = select(selector, votes, heldout, full, proto.batch, seed)
        row["picked_new"] = float((~votes.labelled()[chosen]).sum())
        row["picked_relabel"] = float(len(chosen) - row["picked_new"])
        for song in chosen:
            votes.add(int(song))
        picks.append(chosen.tolist())
    timings = {"wall_s": time.perf_counter() - t0, "model_s": model.train_s}
    return MixedRun(selector, seed, rounds, picks, votes.triples, timings)


def _mean_std(values: Sequence[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=np.float64)
    return {"mean": float(array.mean()), "std": float(array.std())}


def summary(runs: Sequence[MixedRun]) -> dict[str, dict[str, Any]]:
    """Per selector and metric: final value and AUC, mean / std over seeds (ddof 0)."""
    out: dict[str, dict[str, Any]] = {}
    for sel in dict.fromkeys(r.selector for r in runs):
        group = [r for r in runs if r.selector == sel]
        out[sel] = {
            m: {
                "final": _mean_std([r.rounds[-1][m] for r in group]),
                "auc": _mean_std([r.auc(m) for r in group]),
            }
            for m in METRICS
        }
        out[sel]["voted"] = _mean_std([r.rounds[-1]["voted"] for r in group])
        out[sel]["seeds"] = len(group)
    return out


def versus(runs: Sequence[MixedRun], baseline: str) -> dict[str, dict[str, Any]]:
    """Per selector: its final value and AUC minus the baseline's on the same seed."""
    base = {r.seed: r for r in runs if r.selector == baseline}
    out: dict[str, dict[str, Any]] = {}
    for sel in dict.fromkeys(r.selector for r in runs if r.selector != baseline):
        group = [r for r in runs if r.selector == sel and r.seed in base]
        if group:
            out[sel] = {
                m: {
                    "final": _mean_std(
                        [r.rounds[-1][m] - base[r.seed].rounds[-1][m] for r in group]
                    ),
                    "auc": _mean_std([r.auc(m) - base[r.seed].auc(m) for r in group]),
                }
                for m in METRICS
            }
    return out


def markdown(runs: Sequence[MixedRun], metric: str = "all_majority_tiebreak") -> str:
    table = summary(runs)
    vs = {b: versus(runs, b) for b in BASELINES}

    def cell(s: dict[str, float], sign: str = "") -> str:
        return f"{s['mean']:{sign}.4f} ± {s['std']:.4f}"

    lines = [
        f"`{metric}`: mean ± std over {max(t['seeds'] for t in table.values())} seeds; "
        "differences paired by seed",
        "",
        "| selector | AUC | final | AUC - separate | final - separate | AUC - new_entropy "
        "| final - new_entropy | songs with votes |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for sel, row in table.items():
        diffs = [
            cell(vs[b][sel][metric][k], "+") if sel in vs[b] else "—"
            for b in BASELINES
            for k in ("auc", "final")
        ]
        lines.append(
            f"| {sel} | {cell(row[metric]['auc'])} | {cell(row[metric]['final'])} "
            f"| {' | '.join(diffs)} | {row['voted']['mean']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def _write(runs: Sequence[MixedRun], meta: dict[str, Any], args: argparse.Namespace) -> None:
    doc = {
        "meta": meta,
        "summary": summary(runs),
        "versus": {b: versus(runs, b) for b in BASELINES},
        "runs": [vars(r) for r in runs],
    }
    (args.out / "results.json").write_text(json.dumps(doc, separators=(",", ":")))


def main_mixed(args: argparse.Namespace) -> int:
    """``annoloop simulate --protocol music-mixed``: results.json, results.md, accuracy.png/svg."""
    if args.mode != "direct" or args.url or args.resume:
        raise SystemExit(f"{args.protocol} runs in direct mode only, without --resume")
    proto = MIXED_PROTOCOLS[args.protocol].with_overrides(
        selectors=args.strategies, seeds=args.seeds, rounds=args.cycles, data=args.data
    )
    unknown = set(proto.selectors) - set(SELECTORS)
    if unknown:
        raise SystemExit(f"unknown selectors {sorted(unknown)}; choose from {list(SELECTORS)}")
    data = load_music(proto.data)
    args.out.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "protocol": proto.name,
        "data": proto.data,
        "initial": proto.initial,
        "batch": proto.batch,
        "rounds": proto.rounds,
        "model": proto.model,
        "folds": proto.folds,
        "refit": proto.refit,
        "torch_threads": torch.get_num_threads(),
    }
    runs: list[MixedRun] = []
    t0 = time.perf_counter()
    for seed in proto.seeds:  # seed-major: a run cut short keeps its complete seeds
        for selector in proto.selectors:
            run = run_mixed(proto, selector, seed, data)
            runs.append(run)
            accs = " ".join(f"{r['all_majority_tiebreak']:.3f}" for r in run.rounds)
            print(f"{selector} seed {seed}: {accs} ({run.timings['wall_s']:.0f} s)", flush=True)
            meta["wall_s"] = time.perf_counter() - t0
            _write(runs, meta, args)
    text = "\n".join(markdown(runs, m) for m in METRICS)
    (args.out / "results.md").write_text(text)
    print(text, end="")
    records = [
        RunRecord(
            proto.name,
            "direct",
            r.selector,
            r.seed,
            [
                CycleRecord(k, int(row["labels"]), row["all_majority_tiebreak"], [])
                for k, row in enumerate(r.rounds)
            ],
        )
        for r in runs
    ]
    plot(
        records,
        args.out / "accuracy",
        f"{proto.name}: {proto.initial} songs with one answer, then {proto.batch} x {proto.rounds}",
        xlabel="labels spent after the start",
        ylabel="exported labels right, all 700 songs",
        area_name="AUC",
    )
    print(f"wrote {args.out}/results.json, results.md, accuracy.png, accuracy.svg")
    return 0
