"""Active label cleaning (Bernhardt et al., Nat. Commun. 2022; reference: InnerEye-DataQuality).

Items already carry noisy crowd votes ``counts`` (N, C). A model trained on them gives
posteriors ``probs`` (N, C). Each step relabels the highest-scoring item not yet cleaned, asking
for votes until it has a strict majority, and the model is fine-tuned every b new labels.

Scores (higher = relabel first), with l = counts / counts.sum(1) and logs to base C as in the
reference (``cross_entropy`` there divides by log C, which is what makes the 0.3 threshold of
``joint`` meaningful); probabilities are clamped at 1e-12 inside logs, so 0 log 0 = 0:

``ce_minus_entropy``  CE(l, p) - H(p) = -sum_c l_c log p_c + sum_c p_c log p_c (the paper's Phi)
``joint``             CE(l, p) - max(H(p) - 0.3, 0)  (reference ``LabelBasedDecisionRule.JOINT``)
``random``            seeded U[0, 1) per item
``oracle``            the reference's simulation oracle: ``PosteriorBasedSelector`` fed the TRUE
                      label distribution with ``LabelBasedDecisionRule.INV``, i.e.
                      (1 - true[i, argmax counts_i]) / expected number of relabels (see
                      ``expected_relabels``). Needs ``true_dist``.

Majority (reference ``DataCurationSimulator.fetch_until_majority``): an item has a strict
majority when its top vote count is strictly greater than the second-highest count (a
plurality; not "more than half of all votes"). Ties keep asking.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-12
JOINT_GAMMA = 0.3
CLEANING_SCORES: tuple[str, ...] = ("ce_minus_entropy", "joint", "random", "oracle")


def cleaning_scores(
    name: str,
    noisy_counts: np.ndarray,
    probs: np.ndarray,
    *,
    true_dist: np.ndarray | None = None,
    seed: int = 0,
) -> np.ndarray:
    """(N,) float64 relabelling scores, higher = clean first. See the module docstring."""
    counts = np.asarray(noisy_counts, dtype=np.float64)
    p = np.asarray(probs, dtype=np.float64)
    if counts.ndim != 2 or p.shape != counts.shape:
        raise ValueError(
            f"need counts and probs of one shape (N, C), got {counts.shape}, {p.shape}"
        )
    if counts.shape[1] < 2:
        raise ValueError("label cleaning needs at least 2 classes")
    if (counts < 0).any():
        raise ValueError("vote counts must be non-negative")
    if name == "random":
        return np.random.default_rng(seed).random(len(counts))
    if name == "oracle":
        if true_dist is None:
            raise ValueError("the oracle score needs true_dist (N, C)")
        return oracle_scores(counts, np.asarray(true_dist, dtype=np.float64))
    if name not in CLEANING_SCORES:
        raise ValueError(f"unknown cleaning score {name!r}; valid: {list(CLEANING_SCORES)}")
    totals = counts.sum(axis=1, keepdims=True)
    if (totals <= 0).any():
        raise ValueError("every item needs at least one vote for a label-based score")
    ce = cross_entropy(counts / totals, p)
    h = cross_entropy(p, p)
    if name == "ce_minus_entropy":
        return ce - h
    return ce - np.maximum(h - JOINT_GAMMA, 0.0)


def cross_entropy(target: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """(N, C), (N, C) -> (N,) -sum_c target_c log_C max(predicted_c, 1e-12) (log base C)."""
    c = predicted.shape[1]
    return -(target * np.log(np.clip(predicted, EPS, None))).sum(axis=1) / np.log(c)


def oracle_scores(counts: np.ndarray, true_dist: np.ndarray) -> np.ndarray:
    """(N,) (1 - true[i, current majority]) / expected_relabels(counts, true)."""
    if true_dist.shape != counts.shape:
        raise ValueError(f"true_dist must be {counts.shape}, got {true_dist.shape}")
    chosen = counts.argmax(axis=1)
    mislabelled = 1.0 - true_dist[np.arange(len(counts)), chosen]
    return mislabelled / expected_relabels(counts, true_dist)


def expected_relabels(counts: np.ndarray, true_dist: np.ndarray) -> np.ndarray:
    """(N,) the reference's expected number of relabels (``get_exp_num_relabels``).

    With y = argmax counts (lowest index on ties) and d = true_dist: if max d == 1 it is 1 when
    d_y == 1 else 2; otherwise 1 + f(R) for R = classes other than y, the reference's recursion
    cut at depth 3, which in closed form is
    sum_{j in R} d_j (1 + sum_{k in R-j} d_k (1 + S - d_j - d_k)),  S = sum_{R} d.
    """
    n, c = counts.shape
    chosen = counts.argmax(axis=1)
    rows = np.arange(n)
    d = np.where(np.arange(c)[None, :] == chosen[:, None], 0.0, true_dist)  # d restricted to R
    s = d.sum(axis=1, keepdims=True)
    q = (d * d).sum(axis=1, keepdims=True)
    inner = (s - d) * (1.0 + s - d) - (q - d * d)  # sum_{k in R-j} d_k (1 + S - d_j - d_k)
    out = 1.0 + (d * (1.0 + inner)).sum(axis=1)
    certain = true_dist.max(axis=1) == 1.0
    out[certain] = np.where(true_dist[rows, chosen] == 1.0, 1.0, 2.0)[certain]
    return out


def has_strict_majority(counts: np.ndarray) -> np.ndarray:
    """(N, C) votes -> (N,) bool: top count strictly above the second-highest count."""
    counts = np.asarray(counts)
    if counts.shape[1] == 1:
        return counts[:, 0] > 0
    top2 = np.sort(counts, axis=1)[:, -2:]
    return top2[:, 1] > top2[:, 0]


def majority(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, C) votes -> label (N,) int64, tied (N,) bool.

    ``label`` is the most-voted class, the lowest class index among tied classes (also for items
    without votes); ``tied`` marks items without a strict majority.
    """
    counts = np.asarray(counts)
    return counts.argmax(axis=1).astype(np.int64), ~has_strict_majority(counts)


def next_to_clean(scores: np.ndarray, cleaned: np.ndarray) -> int | None:
    """Position of the highest score among items not yet cleaned (lowest index on ties)."""
    open_items = np.flatnonzero(~np.asarray(cleaned, dtype=bool))
    if open_items.size == 0:
        return None
    values = np.nan_to_num(np.asarray(scores, np.float64)[open_items], nan=-np.inf)
    return int(open_items[np.argmax(values)])


def majority_accuracy(counts: np.ndarray, true_labels: np.ndarray) -> float:
    """Fraction of items whose strict-majority label equals ``true_labels`` (ties count wrong)."""
    label, tied = majority(counts)
    return float(((label == np.asarray(true_labels)) & ~tied).mean())


def curve_area(x: np.ndarray, y: np.ndarray) -> float:
    """Trapezoidal area under y(x) divided by the x range (so a constant y gives y)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if len(x) < 2 or x[-1] == x[0]:
        return float(y[0]) if len(y) else float("nan")
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0) / (x[-1] - x[0]))
