"""CEAL: cost-effective active learning (Wang, Zhang, Li, Zhang & Lin, IEEE TCSVT 2016).

Next to the items people label, CEAL trains on the unlabelled items the model is already sure
of, labelled with its own prediction ("high-confidence samples"): those whose predictive
entropy is below a threshold δ that falls as the cycles go by, δ_t = δ₀ − dr · t (the paper's
Algorithm 1, t = the iteration counted from 0), so later, better models pseudo-label less
liberally. The pseudo-labels are not kept: every cycle picks them afresh.

In a cycle (``fit``): (1) train on the labelled items as without CEAL; (2) predict the
unlabelled candidates and take those with H(p) < δ_t, each with its argmax class; (3) continue
training the same network on labelled ∪ pseudo-labelled items for the fine-tuning epochs
(``TrainConfig.for_finetuning``), as CEAL fine-tunes its CNN on D_L ∪ D_H. The network after
(3) is the cycle's model: it is evaluated and it scores the candidates with the cycle's
acquisition strategy, any of them (CEAL is a training option, not a strategy).

Pseudo-labels are training targets only: they never become votes or labels, and each cycle
records which items got which class (``PseudoLabels``; the worker stores it as an artefact).
No randomness beyond training: the pick is a threshold, ties impossible to matter; stage (3)
trains with ``stage_seed(seed)``.

There is no official code from the authors; the check is against the paper's Algorithm 1
written out plainly (``tests/ml/test_ceal.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from worker.ml.data import PoolSource, one_hot
from worker.ml.evaluation import EPS, predict_proba
from worker.ml.strategy_params import CealParams
from worker.ml.training import (
    EpochCallback,
    Objective,
    PauseCheck,
    TrainConfig,
    TrainResult,
    TrainState,
    dataset_targets,
    train,
)

PseudoDatasetFactory = Callable[[np.ndarray, np.ndarray], Dataset[Any]]
# Extra training items generated from the labelled ones (BGADL), or None for none.
Augment = Callable[[Dataset[Any]], Dataset[Any] | None]


@dataclass(frozen=True)
class PseudoLabels:
    """The high-confidence candidates of one cycle: ``positions`` (K,) int64 into the
    candidate pool (ascending), ``classes`` (K,) int64 predicted class, ``entropy`` (K,)
    float64 nats, all below ``delta``."""

    delta: float
    positions: np.ndarray
    classes: np.ndarray
    entropy: np.ndarray

    def __len__(self) -> int:
        return len(self.positions)


def threshold(options: CealParams, t: int) -> float:
    """δ_t = δ₀ − dr · t, never below 0 (no pseudo-labels from then on)."""
    return max(options.delta - options.decay * t, 0.0)


def stage_seed(seed: int) -> int:
    """The seed of the fine-tuning stage (a stream apart from the first training's)."""
    return int(np.random.SeedSequence([seed, 0x4345414C]).generate_state(1)[0] & 0x7FFFFFFF)


def confident(probs: np.ndarray, delta: float, max_items: int | None = None) -> PseudoLabels:
    """(N, C) posteriors -> the items with entropy < ``delta``; with ``max_items``, the most
    confident ones (lowest entropy, then lowest position), reported in position order."""
    p = np.asarray(probs, dtype=np.float64)
    h = -(p * np.log(np.clip(p, EPS, None))).sum(axis=1)
    picked = np.flatnonzero(h < delta)
    if max_items is not None and len(picked) > max_items:
        order = np.lexsort((picked, h[picked]))[:max_items]
        picked = np.sort(picked[order])
    return PseudoLabels(
        delta=float(delta),
        positions=picked.astype(np.int64),
        classes=p[picked].argmax(axis=1).astype(np.int64),
        entropy=h[picked],
    )


class _Joined(Dataset[Any]):
    """Labelled items then pseudo-labelled ones; ``targets`` (read only when the loss is
    class-weighted) stacks both."""

    def __init__(self, first: Dataset[Any], second: Dataset[Any]) -> None:
        self.first, self.second = first, second
        self.n_first = len(first)  # type: ignore[arg-type]

    @property
    def targets(self) -> np.ndarray:
        return torch.cat([dataset_targets(self.first), dataset_targets(self.second)]).numpy()

    def __len__(self) -> int:
        return self.n_first + len(self.second)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        if index < self.n_first:
            return self.first[index]
        return self.second[index - self.n_first]


def fit(
    model: nn.Module,
    labelled: Dataset[Any],
    config: TrainConfig,
    *,
    seed: int,
    options: CealParams | None,
    cycle_index: int,
    candidates: PoolSource,
    pseudo_dataset: PseudoDatasetFactory,
    device: torch.device | str | None = None,
    epoch_callback: EpochCallback | None = None,
    objective: Objective | None = None,
    pause: PauseCheck | None = None,
    resume: TrainState | None = None,
    augment: Augment | None = None,
) -> tuple[list[TrainResult], PseudoLabels | None]:
    """Train ``model`` in place for a cycle, with CEAL when ``options`` is set.

    ``candidates``: the unlabelled pool (batches of inputs); ``pseudo_dataset(positions,
    targets (K, C))`` builds the ``(x, target)`` Dataset of those candidates. Returns the
    training results (one, or two with CEAL's second stage) and the pseudo-labels (None
    without CEAL). ``objective``: the strategy's training loss, for both stages.
    ``pause``/``resume``: as ``train``'s, for the first stage. ``augment``: builds extra
    ``(x, target)`` items from the labelled Dataset (BGADL's generated samples), trained on
    with the labelled items in both stages."""
    extra_items = augment(labelled) if augment is not None else None
    if extra_items is not None and len(extra_items):  # type: ignore[arg-type]
        labelled = _Joined(labelled, extra_items)
    first = train(
        model,
        labelled,
        config,
        seed=seed,
        device=device,
        epoch_callback=epoch_callback,
        objective=objective,
        pause=pause,
        resume=resume,
    )
    if options is None:
        return [first], None
    delta = threshold(options, cycle_index)
    pseudo = confident(predict_proba(model, candidates, device).numpy(), delta, options.max_items)
    if len(pseudo) == 0:
        return [first], pseudo
    extra = pseudo_dataset(pseudo.positions, one_hot(pseudo.classes, _num_classes(model)))
    second = train(
        model,
        _Joined(labelled, extra),
        config.for_finetuning(),
        seed=stage_seed(seed),
        device=device,
        objective=objective,
    )
    return [first, second], pseudo


def _num_classes(model: nn.Module) -> int:
    return int(getattr(model, "num_classes", 0))


def options_of(params: Mapping[str, Any]) -> CealParams | None:
    """The cycle's CEAL options (``params["ceal"]``), or None when CEAL is off."""
    raw = params.get("ceal")
    return None if raw is None else CealParams.model_validate(raw)


def record(pseudo: PseudoLabels, item_ids: np.ndarray) -> dict[str, np.ndarray]:
    """What a cycle stores: the pseudo-labelled items' ids, classes and entropies."""
    return {
        "item_ids": np.asarray(item_ids, dtype=np.int64)[pseudo.positions],
        "classes": pseudo.classes,
        "entropy": pseudo.entropy,
        "delta": np.asarray(pseudo.delta),
    }
