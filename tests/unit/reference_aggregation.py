"""Slow, obvious reference versions of ``app.annotations.aggregation``: plain Python loops over
votes, one item and one class at a time, for the tests to compare the vectorised code with."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

Vote = tuple[int, int, int]  # (item, annotator, class)


def as_votes(items: np.ndarray, annotators: np.ndarray, classes: np.ndarray) -> list[Vote]:
    return [(int(i), int(a), int(k)) for i, a, k in zip(items, annotators, classes, strict=True)]


def vote_counts(votes: list[Vote], num_items: int, num_classes: int) -> list[list[int]]:
    counts = [[0] * num_classes for _ in range(num_items)]
    for item, _, k in votes:
        counts[item][k] += 1
    return counts


def majority(
    votes: list[Vote], num_items: int, num_classes: int
) -> tuple[list[int], list[list[float]], list[bool]]:
    """(label, posterior, tied): the strict majority or -1, counts / total, shared top count."""
    labels, posterior, tied = [], [], []
    for row in vote_counts(votes, num_items, num_classes):
        total = sum(row)
        if total == 0:
            labels.append(-1)
            posterior.append([1.0 / num_classes] * num_classes)
            tied.append(False)
            continue
        top = max(row)
        leaders = [k for k in range(num_classes) if row[k] == top]
        labels.append(leaders[0] if len(leaders) == 1 else -1)
        posterior.append([x / total for x in row])
        tied.append(len(leaders) > 1)
    return labels, posterior, tied


def majority_tiebreak_by_model(
    votes: list[Vote], num_items: int, num_classes: int, model_probs: np.ndarray
) -> list[int]:
    """Ties go to the tied class the model finds most probable (the first one if equal)."""
    labels = []
    for item, row in enumerate(vote_counts(votes, num_items, num_classes)):
        if sum(row) == 0:
            labels.append(-1)
            continue
        top = max(row)
        leaders = [k for k in range(num_classes) if row[k] == top]
        best = leaders[0]
        for k in leaders[1:]:
            if model_probs[item, k] > model_probs[item, best]:
                best = k
        labels.append(best)
    return labels


def dawid_skene(
    votes: list[Vote],
    num_items: int,
    num_annotators: int,
    num_classes: int,
    *,
    smoothing: float,
    max_iter: int,
    tol: float,
) -> tuple[list[int], list[list[float]], list[float]]:
    """(label, posterior, annotator accuracy): textbook EM, started from the soft majority."""
    c = num_classes
    counts = vote_counts(votes, num_items, c)
    by_item: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for item, annotator, k in votes:
        by_item[item].append((annotator, k))
    voted = sorted(by_item)
    post = {i: [x / sum(counts[i]) for x in counts[i]] for i in voted}
    prior = [1.0 / c] * c
    # confusion[a][true][given]
    confusion = [[[1.0 / c] * c for _ in range(c)] for _ in range(num_annotators)]
    for _ in range(max_iter):
        confusion = [[[smoothing] * c for _ in range(c)] for _ in range(num_annotators)]
        for item, annotator, given in votes:
            for true in range(c):
                confusion[annotator][true][given] += post[item][true]
        for rows in confusion:
            for row in rows:
                total = sum(row)
                for given in range(c):
                    row[given] /= total
        prior = [smoothing + sum(post[i][k] for i in voted) for k in range(c)]
        prior_total = sum(prior)
        prior = [p / prior_total for p in prior]

        updated = {}
        for i in voted:
            log_joint = []
            for true in range(c):
                value = math.log(prior[true])
                for annotator, given in by_item[i]:
                    value += math.log(confusion[annotator][true][given])
                log_joint.append(value)
            top = max(log_joint)
            weights = [math.exp(x - top) for x in log_joint]
            total = sum(weights)
            updated[i] = [w / total for w in weights]
        change = max((abs(updated[i][k] - post[i][k]) for i in voted for k in range(c)), default=0)
        post = updated
        if change < tol:
            break

    labels, posterior = [], []
    for i in range(num_items):
        if i not in post:
            labels.append(-1)
            posterior.append([1.0 / c] * c)
            continue
        row = post[i]
        best = 0
        for k in range(1, c):
            if row[k] > row[best]:  # strictly: the lowest index wins an exact tie
                best = k
        labels.append(best)
        posterior.append(row)
    active = {annotator for _, annotator, _ in votes}
    accuracy = [
        sum(prior[k] * confusion[a][k][k] for k in range(c)) if a in active else math.nan
        for a in range(num_annotators)
    ]
    return labels, posterior, accuracy
