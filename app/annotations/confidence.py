"""When an item has enough labels: the lead its top class needs for a confident posterior.

Under the one-coin model (every annotator right with probability ``accuracy``, otherwise any
other of the C classes alike) and a uniform prior, the posterior of the top class of an item
is 1 / (1 + sum over the other classes j of r^(n_top - n_j)), r = (1 - a) / ((C - 1) a). It
depends on the votes only through the leads n_top - n_j, and with a lead of L over the
runner-up it is at least 1 / (1 + (C - 1) r^L), the value when every other class is as close
as the runner-up. So "the posterior is at least ``target``" holds once the lead reaches

    L = ceil(log((1 - target) / (target (C - 1))) / log r),

a rule the hot path can check from vote counts alone (``queue_entry.stop_lead``). The
accuracy comes from Dawid–Skene on the project's votes (``mean_vote_accuracy``), re-estimated
every cycle; per-annotator weights would need that model in every submit.
"""

from __future__ import annotations

import math

import numpy as np

MIN_TARGET = 0.5
MAX_TARGET = 0.999


def decided_lead(target: float, accuracy: float, num_classes: int) -> int | None:
    """The smallest lead of the top class over the runner-up at which its one-coin posterior
    is at least ``target``; None when the annotators are no better than chance."""
    if not MIN_TARGET < target < 1.0:
        raise ValueError(f"target must be in ({MIN_TARGET}, 1), got {target}")
    if num_classes < 2:
        raise ValueError("needs at least 2 classes")
    chance = 1.0 / num_classes
    if not accuracy > chance or not math.isfinite(accuracy):
        return None
    accuracy = min(accuracy, 1.0 - 1e-9)
    ratio = (1.0 - accuracy) / ((num_classes - 1) * accuracy)
    needed = math.log((1.0 - target) / (target * (num_classes - 1))) / math.log(ratio)
    return max(1, math.ceil(needed - 1e-9))


def one_coin_posterior(counts: np.ndarray, accuracy: float) -> np.ndarray:
    """(N, C) posterior of each class under the one-coin model, for (N, C) vote counts."""
    counts = np.asarray(counts, dtype=np.float64)
    c = counts.shape[1]
    accuracy = min(max(accuracy, 1e-9), 1.0 - 1e-9)
    log_ratio = math.log(accuracy) - math.log((1.0 - accuracy) / (c - 1))
    logits = counts * log_ratio
    logits -= logits.max(axis=1, keepdims=True)
    weights = np.exp(logits)
    return np.asarray(weights / weights.sum(axis=1, keepdims=True))


def mean_vote_accuracy(annotator_accuracy: np.ndarray, votes_per_annotator: np.ndarray) -> float:
    """The accuracy of a random vote: annotators' accuracies weighted by how many votes each
    gave (annotators without an estimate left out); NaN when nobody has one."""
    acc = np.asarray(annotator_accuracy, dtype=np.float64)
    weight = np.asarray(votes_per_annotator, dtype=np.float64)
    known = np.isfinite(acc) & (weight > 0)
    if not known.any():
        return float("nan")
    return float(np.average(acc[known], weights=weight[known]))
