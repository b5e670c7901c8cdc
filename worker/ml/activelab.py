"""ActiveLab (Goh & Mueller 2023): one score that ranks new items and relabels together.

Lower = ask for a label next. ``activelab_scores`` computes what
``cleanlab.multiannotator.get_active_learning_scores`` (cleanlab 2.9) computes, on our vote
layout (three parallel arrays, as ``app.annotations.aggregation``):

- When every labelled item has exactly one vote: the consensus is that vote, its quality is
  the model's probability of it, and the model and every annotator weigh 1 (no temperature).
- Otherwise: the model's probabilities are temperature-scaled (T minimising the soft cross
  entropy against each item's vote distribution, over cleanlab's coarse grid then a finer
  one), CROWDLAB gives the consensus, its posterior and the weights; quality = the posterior
  of the consensus.
- Labelled item i: the weighted average of its quality (weight: the model's weight plus the
  weights of the annotators who voted on i) and 1/C (weight: the mean annotator weight): an
  item with many trusted votes keeps its quality; one with few is pulled towards 1/C.
- Unlabelled item: the average of the scaled model's top probability (weight: the model's)
  and 1/C (weight: the mean annotator weight).

Both score arrays are on one scale, so a single ascending sort decides, label by label,
between a new item and another vote on a labelled one. ``probs`` of labelled items must be
held out (cross-fitted), as CROWDLAB's are.

Only numpy.
"""

from __future__ import annotations

import numpy as np

from app.annotations.aggregation import crowdlab_consensus

_COARSE_TEMPERATURES = (0.1, 0.2, 0.5, 0.8, 1.0, 2.0, 3.0, 5.0, 8.0)
_FINE_STEPS = 4
_SMALL = 1e-30  # cleanlab's SMALL_CONST: probabilities are clipped here before a log
_EPSILON = 1e-6  # cleanlab's softmax floor on the temperature


def activelab_scores(
    items: np.ndarray,
    annotators: np.ndarray,
    classes: np.ndarray,
    *,
    num_annotators: int,
    probs: np.ndarray,
    probs_unlabelled: np.ndarray,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(L,), (U,) float64 scores in [0, 1], lower = label next.

    ``items`` (V,) rows 0..L-1 of ``probs`` (L, C), every row with at least one vote;
    ``annotators`` (V,) 0..A-1; ``classes`` (V,) 0..C-1; ``probs_unlabelled`` (U, C).
    An (item, annotator) pair may appear once only, as in cleanlab's table.
    """
    p = _normalised(probs)
    pu = _normalised(probs_unlabelled)
    num_items, c = p.shape
    if pu.shape[1] != c:
        raise ValueError(f"probs_unlabelled needs {c} columns, got {pu.shape[1]}")
    items = np.asarray(items, dtype=np.int64)
    annotators = np.asarray(annotators, dtype=np.int64)
    classes = np.asarray(classes, dtype=np.int64)
    per_item = np.bincount(items, minlength=num_items)
    if num_items and (per_item == 0).any():
        raise ValueError("every labelled item needs at least one vote")
    pairs = items * max(num_annotators, 1) + annotators
    if len(np.unique(pairs)) != len(pairs):
        raise ValueError("an annotator may vote on an item once only")

    if num_items == 0:
        temperature, model_weight, mean_weight = 1.0, 1.0, 1.0
        labelled = np.zeros(0)
    elif (per_item == 1).all():
        temperature, model_weight, mean_weight = 1.0, 1.0, 1.0
        quality = np.asarray(probs, dtype=np.float64)[items, classes]
        order = np.argsort(items)
        labelled = _blend(quality[order], 2.0, c, mean_weight)
    else:
        temperature = best_temperature(items, classes, p)
        scaled = temperature_scaled(p, temperature)
        fit = crowdlab_consensus(
            items,
            annotators,
            classes,
            num_items=num_items,
            num_annotators=num_annotators,
            num_classes=c,
            model_probs=scaled,
            seed=seed,
        )
        model_weight = fit.model_weight
        mean_weight = float(np.nanmean(fit.annotator_weight))
        quality = fit.posterior[np.arange(num_items), fit.label]
        voters = np.bincount(items, fit.annotator_weight[annotators], num_items)
        labelled = _blend(quality, voters + model_weight, c, mean_weight)
    top = temperature_scaled(pu, temperature).max(axis=1) if len(pu) else np.zeros(0)
    unlabelled = _blend(top, model_weight, c, mean_weight)
    return labelled, unlabelled


def _blend(quality: np.ndarray, weight: np.ndarray | float, c: int, prior: float) -> np.ndarray:
    return np.asarray((quality * weight + prior / c) / (weight + prior), dtype=np.float64)


def best_temperature(items: np.ndarray, classes: np.ndarray, probs: np.ndarray) -> float:
    """The temperature whose scaled ``probs`` have the lowest mean soft cross entropy against
    each item's vote distribution: the coarse grid, then a finer grid around its best."""
    num_items, c = probs.shape
    counts = np.zeros((num_items, c))
    np.add.at(counts, (items, classes), 1.0)
    target = counts / counts.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore"):
        logp = np.log(probs)

    def loss(t: float) -> float:
        x = np.exp(logp / max(t, _EPSILON))
        scaled = np.clip(x / x.sum(axis=1, keepdims=True), _SMALL, None)
        return float(np.mean(-(target * np.log(scaled)).sum(axis=1) / np.log(c)))

    coarse = _COARSE_TEMPERATURES
    best = int(np.argmin([loss(t) for t in coarse]))
    fine = np.zeros(0)
    if best != 0:
        fine = np.linspace(coarse[best - 1], coarse[best], _FINE_STEPS, endpoint=False)
    if best != len(coarse) - 1:
        upper = np.linspace(coarse[best], coarse[best + 1], _FINE_STEPS + 1, endpoint=True)
        fine = np.append(fine, upper)
    return float(fine[int(np.argmin([loss(float(t)) for t in fine]))])


def temperature_scaled(probs: np.ndarray, temperature: float) -> np.ndarray:
    """(N, C) softmax(log p / T), rows summing to 1 (p clipped at 1e-30 first)."""
    p = np.clip(np.asarray(probs, dtype=np.float64), _SMALL, None)
    p = p / p.sum(axis=1, keepdims=True)
    x = np.exp(np.log(p) / max(temperature, _EPSILON))
    x = x / x.sum(axis=1, keepdims=True)
    return np.asarray(x / x.sum(axis=1, keepdims=True))


def _normalised(probs: np.ndarray) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"probabilities need shape (N, C) with C >= 2, got {p.shape}")
    if not np.isfinite(p).all() or (p < 0).any():
        raise ValueError("probabilities must be finite and non-negative")
    return p
