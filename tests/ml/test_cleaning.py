"""Label-cleaning scores and majority helpers against hand-worked examples."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from worker.ml.cleaning import (
    cleaning_scores,
    curve_area,
    expected_relabels,
    has_strict_majority,
    majority,
    majority_accuracy,
    next_to_clean,
)

LOG2 = math.log(2)


def test_ce_minus_entropy_two_classes_by_hand() -> None:
    counts = np.array([[3, 1], [0, 2], [1, 1]])
    probs = np.array([[0.5, 0.5], [1.0, 0.0], [0.25, 0.75]])
    # logs base C = 2
    # item 0: CE = -(.75 log .5 + .25 log .5) = 1 bit; H = 1 bit -> 0
    # item 1: CE = -(1 * log 1e-12)/log 2; H = 0 (0 log 0 = 0)
    # item 2: CE = -(.5 log .25 + .5 log .75)/log 2; H = -(.25 log .25 + .75 log .75)/log 2
    ce2 = -(0.5 * math.log(0.25) + 0.5 * math.log(0.75)) / LOG2
    h2 = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75)) / LOG2
    expected = [0.0, -math.log(1e-12) / LOG2, ce2 - h2]
    assert cleaning_scores("ce_minus_entropy", counts, probs) == pytest.approx(expected)


def test_joint_three_classes_by_hand() -> None:
    counts = np.array([[2, 0, 0], [1, 1, 0]])
    probs = np.array([[1 / 3, 1 / 3, 1 / 3], [0.9, 0.05, 0.05]])
    log3 = math.log(3)
    # item 0: CE = log 3 / log 3 = 1; H = 1 -> max(1 - .3, 0) = .7 -> .3
    # item 1: CE = -(.5 log .9 + .5 log .05)/log 3; H = -(.9 log .9 + 2 * .05 log .05)/log 3
    ce1 = -(0.5 * math.log(0.9) + 0.5 * math.log(0.05)) / log3
    h1 = -(0.9 * math.log(0.9) + 0.1 * math.log(0.05)) / log3
    assert h1 > 0.3
    expected = [1.0 - 0.7, ce1 - (h1 - 0.3)]
    assert cleaning_scores("joint", counts, probs) == pytest.approx(expected)
    # an entropy below the 0.3 threshold is not subtracted at all
    confident = cleaning_scores("joint", np.array([[0, 1, 0]]), np.array([[0.98, 0.01, 0.01]]))
    expected_ce = -math.log(0.01) / log3
    assert confident == pytest.approx([expected_ce])


def test_ties_in_counts_and_probs() -> None:
    counts = np.array([[1, 1], [1, 1]])
    probs = np.array([[0.5, 0.5], [0.5, 0.5]])
    scores = cleaning_scores("ce_minus_entropy", counts, probs)
    assert scores == pytest.approx([0.0, 0.0])
    assert next_to_clean(scores, np.array([False, False])) == 0
    assert next_to_clean(scores, np.array([True, False])) == 1
    assert next_to_clean(scores, np.array([True, True])) is None


def test_random_is_seeded() -> None:
    counts = np.ones((5, 3))
    probs = np.full((5, 3), 1 / 3)
    a = cleaning_scores("random", counts, probs, seed=1)
    assert a.tolist() == cleaning_scores("random", counts, probs, seed=1).tolist()
    assert a.tolist() != cleaning_scores("random", counts, probs, seed=2).tolist()


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="unknown cleaning score"):
        cleaning_scores("nope", np.ones((1, 2)), np.full((1, 2), 0.5))
    with pytest.raises(ValueError, match="at least one vote"):
        cleaning_scores("joint", np.zeros((1, 2)), np.full((1, 2), 0.5))
    with pytest.raises(ValueError, match="true_dist"):
        cleaning_scores("oracle", np.ones((1, 2)), np.full((1, 2), 0.5))


def _exp_num_literal(remaining: list[int], dist: list[float], ctr: int, max_levels: int) -> float:
    """The reference's depth-limited recursion, written out literally."""
    ctr += 1
    if not remaining:
        return 0.0
    if ctr >= max_levels:
        return sum(dist[j] for j in remaining)
    return sum(
        dist[j] * (1 + _exp_num_literal([k for k in remaining if k != j], dist, ctr, max_levels))
        for j in remaining
    )


def _expected_literal(counts: np.ndarray, true_dist: np.ndarray) -> list[float]:
    out = []
    for row, dist in zip(counts, true_dist, strict=True):
        chosen = int(np.argmax(row))
        d = dist.tolist()
        if max(d) == 1:
            out.append(1.0 if d[chosen] == 1 else 2.0)
        else:
            rest = [c for c in range(len(d)) if c != chosen]
            out.append(1.0 + _exp_num_literal(rest, d, 0, 3))
    return out


@pytest.mark.parametrize("num_classes", [2, 3, 4, 6])
def test_expected_relabels_matches_literal_recursion(num_classes: int) -> None:
    rng = np.random.default_rng(num_classes)
    counts = rng.integers(0, 4, size=(25, num_classes))
    true_dist = rng.dirichlet(np.ones(num_classes), size=25)
    true_dist[0] = np.eye(num_classes)[0]
    true_dist[1] = np.eye(num_classes)[1]
    counts[0] = counts[1] = np.eye(num_classes, dtype=int)[0] * 3
    got = expected_relabels(counts.astype(float), true_dist)
    assert got == pytest.approx(_expected_literal(counts, true_dist))
    assert got[0] == 1.0  # certain and right
    assert got[1] == 2.0  # certain and wrong


def test_oracle_by_hand() -> None:
    counts = np.array([[2, 0, 1], [0, 1, 0]])
    true_dist = np.array([[0.2, 0.5, 0.3], [0.0, 1.0, 0.0]])
    # item 0: majority 0; mislabelled = 0.8; R = {1, 2}, d = .5, .3, S = .8
    #   f = .5 (1 + .3 (1 + .8 - .5 - .3)) + .3 (1 + .5 (1 + .8 - .3 - .5)) = .5*1.3 + .3*1.5
    exp0 = 1 + 0.5 * 1.3 + 0.3 * 1.5
    # item 1: majority 1 is certain and right: 0 / 1
    scores = cleaning_scores("oracle", counts, np.full((2, 3), 1 / 3), true_dist=true_dist)
    assert scores == pytest.approx([0.8 / exp0, 0.0])


def test_strict_majority_and_ties_by_hand() -> None:
    counts = np.array(
        [
            [3, 1, 0],  # majority 0
            [2, 2, 0],  # tie 0/1 -> label 0, tied
            [1, 1, 1],  # three-way tie
            [0, 0, 0],  # no votes: tied, label 0
            [1, 2, 2],  # tie between 1 and 2 -> label 1
            [2, 1, 1],  # plurality without > half of votes still counts
            [0, 0, 5],
        ]
    )
    label, tied = majority(counts)
    assert label.tolist() == [0, 0, 0, 0, 1, 0, 2]
    assert label.dtype == np.int64
    assert tied.tolist() == [False, True, True, True, True, False, False]
    assert has_strict_majority(counts).tolist() == [not t for t in tied.tolist()]


def test_majority_accuracy_and_area() -> None:
    counts = np.array([[3, 0], [1, 1], [0, 2], [2, 1]])
    assert majority_accuracy(counts, np.array([0, 0, 1, 1])) == pytest.approx(0.5)
    assert curve_area(np.array([0, 1, 2]), np.array([0.5, 0.5, 0.5])) == pytest.approx(0.5)
    assert curve_area(np.array([0, 2]), np.array([0.0, 1.0])) == pytest.approx(0.5)


def test_all_permutations_of_a_tie_keep_lowest_index() -> None:
    for perm in itertools.permutations([2, 2, 1]):
        label, tied = majority(np.array([perm]))
        assert tied[0]
        assert label[0] == perm.index(2)
