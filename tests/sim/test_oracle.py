"""Simulated annotators answer the same whatever order they are asked in."""

from __future__ import annotations

import numpy as np
import pytest

from worker.sim.oracle import CrowdOracle, Oracle, make_oracle


def test_exact_oracle_answers_the_true_label() -> None:
    assert [Oracle(np.array([3, 1, 4])).answer(r) for r in (2, 0, 1)] == [4, 3, 1]


def test_crowd_oracle_is_order_independent_and_follows_the_votes() -> None:
    labels = np.zeros(3, np.int64)
    counts = np.array([[10, 0, 0], [0, 5, 5], [1, 1, 8]])
    a, b = CrowdOracle(labels, counts, seed=7), CrowdOracle(labels, counts, seed=7)
    forward = {r: [a.answer(r) for _ in range(3)] for r in (0, 1, 2)}
    backward = {r: [b.answer(r) for _ in range(3)] for r in (2, 1, 0)}
    assert forward == backward
    assert forward[0] == [0, 0, 0]  # all votes on class 0
    draws = [CrowdOracle(labels, counts, seed=s).answer(1) for s in range(400)]
    assert set(draws) == {1, 2}
    assert 0.4 < np.mean(np.array(draws) == 1) < 0.6


def test_crowd_oracle_needs_counts() -> None:
    with pytest.raises(ValueError, match="vote counts"):
        make_oracle("crowd", np.zeros(2), None, 0)
