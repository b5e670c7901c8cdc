"""Simulated annotators. Answers depend only on (seed, item, how often it was asked), never on
the order questions arrive in, so the direct and the API path get the same labels."""

from __future__ import annotations

from collections import defaultdict

import numpy as np


class Oracle:
    """Answers the true label of a data row."""

    def __init__(self, labels: np.ndarray) -> None:
        self.labels = np.asarray(labels, dtype=np.int64)

    def answer(self, row: int) -> int:
        return int(self.labels[row])


class CrowdOracle(Oracle):
    """Answers a draw from row's vote distribution ``counts[row] / counts[row].sum()``.

    The k-th answer for a row comes from ``default_rng([seed, row, k])``: reproducible and
    independent of which annotator asks first.
    """

    def __init__(self, labels: np.ndarray, counts: np.ndarray, seed: int) -> None:
        super().__init__(labels)
        counts = np.asarray(counts, dtype=np.float64)
        totals = counts.sum(axis=1, keepdims=True)
        # Rows without votes (a file's own test rows) get no distribution: asking them is a bug.
        self.probs = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
        self.seed = seed
        self.asked: defaultdict[int, int] = defaultdict(int)

    def answer(self, row: int) -> int:
        if not self.probs[row].any():
            raise ValueError(f"row {row} has no crowd answers to draw from")
        k = self.asked[row]
        self.asked[row] += 1
        rng = np.random.default_rng([self.seed, row, k])
        return int(rng.choice(len(self.probs[row]), p=self.probs[row]))


def make_oracle(kind: str, labels: np.ndarray, counts: np.ndarray | None, seed: int) -> Oracle:
    if kind == "exact":
        return Oracle(labels)
    if kind == "crowd":
        if counts is None:
            raise ValueError("the crowd oracle needs vote counts (DataSource.counts)")
        return CrowdOracle(labels, counts, seed)
    raise ValueError(f"unknown oracle {kind!r}; choose exact or crowd")
