"""Active label cleaning, simulated on CIFAR-10H (Bernhardt et al., Nat. Commun. 2022).

Every item starts with one noisy vote, drawn from its crowd vote distribution flattened by a
temperature T (p^(1/T), renormalised). A selector ranks the items; the top one not yet cleaned
is relabelled with draws from its untempered vote distribution until its votes have a strict
majority, one item at a time, until ``min(budget_factor * eta * N, N)`` relabels are spent
(eta = realised noise rate). The curve is the fraction of items whose current majority equals
their true majority, against relabels spent; its area over [0, budget] / budget is the AUC.

Scores are the product's (``worker.ml.cleaning.cleaning_scores``, as the worker's cleaning cycle
in ``worker/pipeline/clean.py`` calls them); the model-based selectors train a selector model on
the noisy votes as soft targets and fine-tune it every ``refresh_every`` relabels
(``TrainConfig.for_finetuning``), scoring the items it was trained on, as the worker does.
The ``_oof`` selectors score held-out posteriors of K cross-fitted fold models instead
(``heldout.py``).

Definitions, all on the N chosen items:

- true majority: ``argmax`` of the full CIFAR-10H counts, the lowest class index on a tie
  (3 of the 10,000 images are tied), as the reference's ``np.argmax(label_counts, 1)``; with
  ``truth = "labels"`` the data file's true labels instead (``music-clean``, ``music.py``);
- current majority: the item's votes; tied votes count as wrong (``majority_accuracy``); the
  curve is sampled after each cleaned item, when no item is tied;
- noise rate eta: fraction of items whose initial vote differs from the true majority.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from worker.ml.cleaning import (
    cleaning_scores,
    has_strict_majority,
    majority,
    next_to_clean,
)
from worker.ml.data import ArrayDataset, LoaderPool
from worker.ml.device import resolve_device
from worker.ml.evaluation import predict_proba
from worker.ml.models import Classifier, build_model
from worker.ml.spec import ModelSpec
from worker.ml.training import TrainConfig, train
from worker.pipeline.common import SCORE_BATCH
from worker.sim.heldout import HeldOutModel
from worker.sim.oracle import CrowdOracle
from worker.sim.protocol import Arrays, DataSource, cycle_seed, load_arrays
from worker.sim.record import CycleRecord, RunRecord

MODEL_SELECTORS = ("ce_minus_entropy", "joint")  # in-sample: the model scores its own items
# out-of-sample: the same scores on K-fold cross-fitted held-out posteriors (``heldout.py``)
HELDOUT_SELECTORS = ("ce_minus_entropy_oof", "joint_oof")
DEFAULT_SELECTORS = ("random", "oracle", *MODEL_SELECTORS)
SELECTORS = (*DEFAULT_SELECTORS, *HELDOUT_SELECTORS)
TRUTHS = ("majority", "labels")

Scorer = Callable[[np.ndarray], np.ndarray]  # current counts (N, C) -> scores (N,)
Asker = Callable[[int], int]  # item position -> one new vote


@dataclass(frozen=True)
class CleaningProtocol:
    """One label-cleaning experiment: every selector x seed cleans the same N items."""

    name: str
    data: DataSource
    temperature: float  # initial votes from p^(1/T): T = 2 -> ~15 % noise, T = 10 -> ~30 %
    size: int = 5000  # N
    ambiguity: float = 0.3  # items above this normalised vote entropy are always included
    subset_seed: int = 0  # which unambiguous items fill N; the same for every run seed
    budget_factor: float = 3.0  # budget = min(budget_factor * eta * N, N) relabels
    budget: int = 0  # a fixed relabel budget instead (0 = the budget_factor rule)
    truth: str = "majority"  # the reference: "majority" of all votes or the data's "labels"
    refresh_every: int = 500  # b: relabels between fine-tunes of the selector model
    model: dict[str, Any] = field(default_factory=dict)  # ModelSpecIn of the selector model
    num_classes: int = 10
    folds: int = 5  # K of the out-of-sample selectors' cross-fitting
    refit: str = "finetune"  # their fold models at a refresh: "finetune" or "retrain"
    selectors: tuple[str, ...] = DEFAULT_SELECTORS
    seeds: tuple[int, ...] = (0, 1, 2)

    def with_overrides(self, **changes: Any) -> CleaningProtocol:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


@dataclass(frozen=True)
class CleaningSetup:
    """The N items of a run; arrays are in ``rows`` order."""

    rows: np.ndarray  # (N,) sorted data rows
    true_dist: np.ndarray  # (N, C) float64 full vote distribution
    true_major: np.ndarray  # (N,) int64
    initial: np.ndarray  # (N, C) int64, one noisy vote per item
    noise_rate: float
    budget: int


@dataclass
class Trace:
    """The cleaning curve, one point per cleaned item after the start point.

    ``relabels[k]`` (K+1,) relabels spent and ``correct[k]`` (K+1,) items whose current majority
    equals the true majority, after k items were cleaned; ``picked`` (K,) item positions in
    cleaning order.
    """

    relabels: list[int]
    correct: list[int]
    picked: list[int]


@dataclass
class CleaningRun:
    protocol: str
    selector: str
    seed: int
    size: int
    noise_rate: float
    budget: int
    auc: float
    trace: Trace
    rows: list[int]  # data rows of ``trace.picked``
    timings: dict[str, float] = field(default_factory=dict)

    def accuracy(self) -> np.ndarray:
        """(K+1,) fraction of items with the true majority along the trace."""
        return np.asarray(self.trace.correct, np.float64) / self.size

    def to_json(self) -> dict[str, Any]:
        return {
            "selector": self.selector,
            "seed": self.seed,
            "noise_rate": self.noise_rate,
            "budget": self.budget,
            "auc": self.auc,
            "initial_accuracy": float(self.accuracy()[0]),
            "final_accuracy": float(self.accuracy()[-1]),
            "items_cleaned": len(self.trace.picked),
            "relabels": self.trace.relabels,
            "correct": self.trace.correct,
            "rows": self.rows,
            "timings": self.timings,
        }


def normalised_entropy(counts: np.ndarray) -> np.ndarray:
    """(N, C) votes -> (N,) entropy of the vote distribution in base C (0 = unanimous)."""
    p = np.asarray(counts, np.float64)
    p = p / p.sum(axis=1, keepdims=True)
    logs = np.log(np.where(p > 0, p, 1.0))
    return -(p * logs).sum(axis=1) / np.log(p.shape[1])


def choose_items(counts: np.ndarray, size: int, ambiguity: float, seed: int) -> np.ndarray:
    """(size,) sorted rows: every row above ``ambiguity`` entropy, the rest drawn with ``seed``."""
    ambiguous = normalised_entropy(counts) > ambiguity
    n_amb = int(ambiguous.sum())
    if n_amb > size or size > len(counts):
        raise ValueError(f"cannot pick {size} items: {n_amb} ambiguous of {len(counts)}")
    rest = np.random.default_rng(seed).choice(
        np.flatnonzero(~ambiguous), size=size - n_amb, replace=False
    )
    return np.sort(np.concatenate([np.flatnonzero(ambiguous), rest]))


def tempered(dist: np.ndarray, temperature: float) -> np.ndarray:
    """(N, C) -> (N, C) p^(1/T), renormalised; T > 1 flattens, zeros stay zero."""
    q = np.asarray(dist, np.float64) ** (1.0 / temperature)
    return q / q.sum(axis=1, keepdims=True)


def draw_labels(dist: np.ndarray, seed: int) -> np.ndarray:
    """(N, C) -> (N,) int64: one draw per row, by inverse CDF from ``default_rng([seed, 2])``."""
    u = np.random.default_rng([seed, 2]).random(len(dist))
    cdf = np.cumsum(dist, axis=1)
    # u scaled by the row's own total, which a float cumsum may leave just off 1: a class of
    # probability 0 can then never be drawn, not even the last one
    return (cdf <= u[:, None] * cdf[:, -1:]).sum(axis=1).astype(np.int64)


def cleaning_setup(proto: CleaningProtocol, seed: int, arrays: Arrays) -> CleaningSetup:
    if arrays.counts is None:
        raise ValueError(f"{proto.name}: the data file has no vote counts")
    if arrays.counts.shape[1] != proto.num_classes:
        raise ValueError(f"{proto.name}: votes for {arrays.counts.shape[1]} classes")
    if proto.truth not in TRUTHS:
        raise ValueError(f"{proto.name}: truth must be one of {list(TRUTHS)}")
    rows = choose_items(arrays.counts, proto.size, proto.ambiguity, proto.subset_seed)
    counts = arrays.counts[rows]
    true_dist = counts / counts.sum(axis=1, keepdims=True)
    if proto.truth == "labels":
        true_major = arrays.labels[rows].astype(np.int64)
    else:
        true_major = counts.argmax(axis=1).astype(np.int64)
    noisy = draw_labels(tempered(true_dist, proto.temperature), seed)
    initial = np.zeros_like(counts, dtype=np.int64)
    initial[np.arange(len(rows)), noisy] = 1
    eta = float((noisy != true_major).mean())
    budget = proto.budget or int(min(proto.budget_factor * eta * len(rows), len(rows)))
    return CleaningSetup(rows, true_dist, true_major, initial, eta, budget)


def clean_loop(
    initial: np.ndarray,
    true_major: np.ndarray,
    budget: int,
    score: Scorer,
    ask: Asker,
    refresh_every: int = 0,
) -> tuple[Trace, np.ndarray]:
    """Clean one item at a time until ``budget`` relabels are spent; returns (trace, counts).

    ``initial`` (N, C) votes, ``true_major`` (N,). ``score(counts)`` ranks the items; it is
    called at the start and again once ``refresh_every`` more relabels were spent (0 = never).
    The best-scoring item never cleaned before gets votes from ``ask`` until it has a strict
    majority (at least one vote, so an item's first relabel can confirm it). The item in
    progress is finished, so the last point may pass the budget; the AUC stops at the budget.
    """
    counts = np.array(initial, dtype=np.int64)
    n = len(counts)
    label, tied = majority(counts)
    right = (label == true_major) & ~tied
    cleaned = np.zeros(n, dtype=bool)
    trace = Trace([0], [int(right.sum())], [])
    spent = 0
    scores = score(counts)
    next_refresh = refresh_every
    while spent < budget:
        if refresh_every and spent >= next_refresh:
            scores = score(counts)
            while next_refresh <= spent:
                next_refresh += refresh_every
        i = next_to_clean(scores, cleaned)
        if i is None:
            break
        while True:
            counts[i, ask(i)] += 1
            spent += 1
            if has_strict_majority(counts[i : i + 1])[0]:
                break
        cleaned[i] = True
        right[i] = counts[i].argmax() == true_major[i]
        trace.relabels.append(spent)
        trace.correct.append(int(right.sum()))
        trace.picked.append(i)
    return trace, counts


def area_over_budget(
    relabels: Sequence[float] | np.ndarray, accuracy: Sequence[float] | np.ndarray, budget: int
) -> float:
    """Trapezoid area under accuracy vs relabels on [0, budget], divided by ``budget``.

    The curve is cut at the budget (linear between points) and held at its last value if it
    stops short of it. A zero budget gives the starting accuracy.
    """
    x = np.asarray(relabels, np.float64)
    y = np.asarray(accuracy, np.float64)
    if budget <= 0:
        return float(y[0])
    grid = np.union1d(x[x < budget], [0.0, float(budget)])
    values = np.interp(grid, x, y)  # right of the last point np.interp holds its value
    return float(np.sum((grid[1:] - grid[:-1]) * (values[1:] + values[:-1]) / 2) / budget)


class SelectorModel:
    """The selector model: trained on the noisy votes, fine-tuned on the current votes later.

    ``initial_state`` lets model-based selectors of one (protocol, seed) share the first
    training, which does not depend on the selector.
    """

    def __init__(
        self,
        proto: CleaningProtocol,
        images: np.ndarray,
        seed: int,
        initial_state: dict[str, Any] | None = None,
    ) -> None:
        self.spec = ModelSpec.from_dict({**proto.model, "num_classes": proto.num_classes})
        self.images = images  # (N, H, W, 3) uint8
        self.seed = seed
        self.device = resolve_device()
        self.config = TrainConfig.from_hparams(self.spec.hparams)
        self.model: Classifier | None = None
        self.initial_state = initial_state
        self.refreshes = 0
        self.train_s = 0.0
        self.pool = LoaderPool(
            ArrayDataset(images, input_shape=self.spec.input_shape), batch_size=SCORE_BATCH
        )

    def posteriors(self, counts: np.ndarray) -> np.ndarray:
        """(N, C) votes -> (N, C) float64 posteriors of the model after (re)training on them."""
        t0 = time.perf_counter()
        targets = counts / counts.sum(axis=1, keepdims=True)
        data = ArrayDataset(self.images, targets, input_shape=self.spec.input_shape)
        seed = cycle_seed(self.seed, self.refreshes)
        if self.model is None:
            self.model = build_model(self.spec, seed=seed)
            if self.initial_state is not None:
                self.model.load_state_dict(self.initial_state)
            else:
                train(self.model, data, self.config, seed=seed, device=self.device)
                self.initial_state = {
                    k: v.detach().clone() for k, v in self.model.state_dict().items()
                }
        else:
            # as the worker's cleaning cycle: continue from the last weights, fewer epochs
            config = self.config.for_finetuning()
            train(self.model, data, config, seed=seed, device=self.device)
        self.refreshes += 1
        probs = predict_proba(self.model, self.pool, self.device).numpy().astype(np.float64)
        self.train_s += time.perf_counter() - t0
        return probs


def run_cleaning(
    proto: CleaningProtocol,
    selector: str,
    seed: int,
    arrays: Arrays | None = None,
    shared: dict[Any, Any] | None = None,
) -> CleaningRun:
    """One (selector, seed) run. ``shared`` caches the first training of the selector model
    across the model-based selectors of one seed: ``shared[seed]`` the in-sample model's state,
    ``shared[(seed, "heldout")]`` the fold models' states and held-out posteriors."""
    if selector not in SELECTORS:
        raise ValueError(f"unknown selector {selector!r}; choose from {list(SELECTORS)}")
    arrays = arrays if arrays is not None else load_arrays(proto.data)
    s = cleaning_setup(proto, seed, arrays)
    assert arrays.counts is not None  # checked by cleaning_setup
    crowd = CrowdOracle(arrays.labels, arrays.counts, seed)
    t0 = time.perf_counter()
    model: SelectorModel | HeldOutModel | None = None
    key: Any = seed
    if selector in MODEL_SELECTORS:
        state = shared.get(key) if shared is not None else None
        model = SelectorModel(proto, arrays.images[s.rows], seed, state)
    elif selector in HELDOUT_SELECTORS:
        key = (seed, "heldout")
        model = HeldOutModel(
            proto.model,
            proto.num_classes,
            arrays.images[s.rows],
            seed,
            folds=proto.folds,
            refit=proto.refit,
            first=shared.get(key) if shared is not None else None,
        )
    score_name = selector.removesuffix("_oof")

    def score(counts: np.ndarray) -> np.ndarray:
        probs = model.posteriors(counts) if model is not None else s.true_dist
        return cleaning_scores(score_name, counts, probs, true_dist=s.true_dist, seed=seed)

    def ask(i: int) -> int:
        return crowd.answer(int(s.rows[i]))

    trace, _ = clean_loop(s.initial, s.true_major, s.budget, score, ask, proto.refresh_every)
    if isinstance(model, SelectorModel) and shared is not None and model.initial_state is not None:
        shared.setdefault(key, model.initial_state)
    if isinstance(model, HeldOutModel) and shared is not None and model.first is not None:
        shared.setdefault(key, model.first)
    y = np.asarray(trace.correct, np.float64) / len(s.rows)
    timings = {"wall_s": time.perf_counter() - t0}
    if model is not None:
        timings.update(model_s=model.train_s, model_refreshes=float(model.refreshes))
    return CleaningRun(
        proto.name,
        selector,
        seed,
        len(s.rows),
        s.noise_rate,
        s.budget,
        area_over_budget(trace.relabels, y, s.budget),
        trace,
        [int(s.rows[i]) for i in trace.picked],
        timings,
    )


def on_grid(runs: Sequence[CleaningRun], points: int = 101) -> list[RunRecord]:
    """The runs as ``RunRecord``s on one relabel grid, for ``report.plot``.

    Budgets differ a little between seeds (eta is realised per seed), so every curve is
    interpolated onto ``points`` relabel counts from 0 to the smallest budget.
    """
    top = min(r.budget for r in runs)
    grid = np.unique(np.linspace(0, top, points).round().astype(np.int64))
    out = []
    for r in runs:
        y = np.interp(grid, np.asarray(r.trace.relabels, np.float64), r.accuracy())
        cycles = [
            CycleRecord(k, int(x), float(v), [])
            for k, (x, v) in enumerate(zip(grid, y, strict=True))
        ]
        out.append(RunRecord(r.protocol, "direct", r.selector, r.seed, cycles))
    return out


def summary(runs: Sequence[CleaningRun]) -> dict[str, dict[str, float]]:
    """Per selector: AUC mean / std over seeds and the mean initial / final accuracy."""
    out: dict[str, dict[str, float]] = {}
    for sel in dict.fromkeys(r.selector for r in runs):
        group = [r for r in runs if r.selector == sel]
        aucs = np.array([r.auc for r in group])
        out[sel] = {
            "mean": float(aucs.mean()),
            "std": float(aucs.std()),
            "initial_accuracy": float(np.mean([r.accuracy()[0] for r in group])),
            "final_accuracy": float(np.mean([r.accuracy()[-1] for r in group])),
            "seeds": float(len(group)),
        }
    return out


def versus(runs: Sequence[CleaningRun], baseline: str = "random") -> dict[str, dict[str, float]]:
    """Per selector but ``baseline``: mean / std over seeds of its AUC minus the baseline's
    AUC on the same seed (same noisy start and answers), for the seeds both ran."""
    base = {r.seed: r.auc for r in runs if r.selector == baseline}
    out: dict[str, dict[str, float]] = {}
    for sel in dict.fromkeys(r.selector for r in runs if r.selector != baseline):
        diffs = np.array(
            [r.auc - base[r.seed] for r in runs if r.selector == sel and r.seed in base]
        )
        if diffs.size:
            out[sel] = {
                "mean": float(diffs.mean()),
                "std": float(diffs.std()),
                "seeds": float(diffs.size),
            }
    return out


_CIFAR = DataSource("../shared/data/cifar10h.npz", counts="counts")
# The selector model: the small CNN from scratch on the N noisy images (no pretraining here;
# the paper's selectors start from self-supervised features).
_SELECTOR_CNN = {
    "name": "small_cnn",
    "input_shape": [3, 32, 32],
    "hparams": {"epochs": 20, "batch_size": 64, "lr": 1e-3},
}

_CIFAR_FEATURES = DataSource(
    "cifar10h-features.npz", images="features", counts="counts", standardise=True
)
_SELECTOR_HEAD = {
    "name": "mlp",
    "hparams": {"epochs": 20, "batch_size": 64, "lr": 1e-3, "hidden_sizes": [256]},
}

CLEANING_PROTOCOLS: dict[str, CleaningProtocol] = {
    "cifar10h-clean-t2": CleaningProtocol(
        name="cifar10h-clean-t2", data=_CIFAR, temperature=2.0, model=_SELECTOR_CNN
    ),
    "cifar10h-clean-t10": CleaningProtocol(
        name="cifar10h-clean-t10", data=_CIFAR, temperature=10.0, model=_SELECTOR_CNN
    ),
    # The selector on unsupervised features of the images (``python -m worker.sim.features``
    # writes the file; pass it with --data): an MLP head on them, as a project with a frozen
    # pretrained backbone trains one. The input width comes from the file.
    **{
        f"cifar10h-clean-t{t}-features": CleaningProtocol(
            name=f"cifar10h-clean-t{t}-features",
            data=_CIFAR_FEATURES,
            temperature=float(t),
            model=_SELECTOR_HEAD,
        )
        for t in (2, 10)
    },
    # CI: seconds per selector on 2 cores; see tests/sim/test_cleaning_sanity.py for margins.
    "cifar10h-clean-fast": CleaningProtocol(
        name="cifar10h-clean-fast",
        data=_CIFAR,
        temperature=10.0,
        size=2000,
        refresh_every=0,
        model={**_SELECTOR_CNN, "hparams": {"epochs": 10, "batch_size": 64, "lr": 1e-3}},
        selectors=("random", "oracle", "ce_minus_entropy"),
        seeds=(0,),
    ),
}
