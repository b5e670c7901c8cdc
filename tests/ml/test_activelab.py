"""ActiveLab scores (worker/ml/activelab.py) against cleanlab's get_active_learning_scores on
small random inputs, and the properties the mixed queue relies on.

cleanlab 2.9 counts each item's votes for the temperature search with ``value_counts`` on the
float (NaN-padded) table, which places the counts of a row that lacks a class sequentially
(votes [0, 2] become [1, 1, 0] instead of [1, 0, 1]). We count by class; the comparison with
cleanlab's scores therefore hands cleanlab our temperature, and the temperature search is
checked separately: against cleanlab on rows where the two countings agree, and against a
plain loop on any rows."""

from __future__ import annotations

import cleanlab.multiannotator as cleanlab_multiannotator
import numpy as np
import pytest
from cleanlab.internal.multiannotator_utils import find_best_temp_scaler
from cleanlab.multiannotator import get_active_learning_scores

from worker.ml.activelab import activelab_scores, best_temperature


def case(
    seed: int, single: bool, n: int = 30, a: int = 5, c: int = 3, u: int = 12
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """Votes as cleanlab accepts them (every item and annotator has one, pairs unique),
    held-out-like probabilities for them and probabilities of unlabelled items."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, c, n)
    skill = rng.uniform(0.35, 0.95, a)
    if single:
        present = np.zeros((n, a), dtype=bool)
        present[np.arange(n), rng.integers(0, a, n)] = True
    else:
        present = rng.random((n, a)) < 0.4
        present[np.arange(n), rng.integers(0, a, n)] = True
    present[rng.permutation(n)[:a], np.arange(a)] = True
    if single:  # the column fix above may have given an item a second vote
        for i in np.nonzero(present.sum(axis=1) > 1)[0]:
            keep = np.nonzero(present[i])[0][0]
            present[i] = False
            present[i, keep] = True
    items, annotators = np.nonzero(present)
    right = rng.random(len(items)) < skill[annotators]
    classes = np.where(right, truth[items], rng.integers(0, c, len(items)))
    probs = rng.dirichlet(np.ones(c) * 0.8, n)
    probs_u = rng.dirichlet(np.ones(c) * 0.8, u)
    table = np.full((n, a), np.nan)
    table[items, annotators] = classes
    used = ~np.isnan(table).all(axis=0)
    table = table[:, used]
    remap = np.cumsum(used) - 1
    return (items, remap[annotators], classes), probs, probs_u, table


def class_counted_temperature(table: np.ndarray, probs: np.ndarray) -> float:
    items, annotators = np.nonzero(~np.isnan(table))
    return best_temperature(items, table[items, annotators].astype(np.int64), probs)


@pytest.mark.parametrize("single", [False, True])
@pytest.mark.parametrize("seed", range(8))
def test_matches_cleanlab(seed: int, single: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    votes, probs, probs_u, table = case(seed, single)
    monkeypatch.setattr(cleanlab_multiannotator, "find_best_temp_scaler", class_counted_temperature)
    theirs, theirs_u = get_active_learning_scores(table, probs, probs_u)
    ours, ours_u = activelab_scores(
        *votes, num_annotators=table.shape[1], probs=probs, probs_unlabelled=probs_u
    )
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours_u, theirs_u, rtol=0, atol=1e-9)


def loop_temperature(items: np.ndarray, classes: np.ndarray, probs: np.ndarray) -> float:
    """The search written out: each item's vote shares, every grid point, first minimum."""
    n, c = probs.shape

    def loss(t: float) -> float:
        total = 0.0
        for i in range(n):
            votes = classes[items == i]
            scaled = [p ** (1.0 / t) for p in probs[i]]
            scaled = [max(s / sum(scaled), 1e-30) for s in scaled]
            total += -sum((votes == k).mean() * np.log(scaled[k]) for k in range(c)) / np.log(c)
        return total / n

    coarse = [0.1, 0.2, 0.5, 0.8, 1, 2, 3, 5, 8]
    losses = [loss(t) for t in coarse]
    b = losses.index(min(losses))
    fine: list[float] = []
    if b > 0:
        fine += [coarse[b - 1] + j * (coarse[b] - coarse[b - 1]) / 4 for j in range(4)]
    if b < len(coarse) - 1:
        fine += [coarse[b] + j * (coarse[b + 1] - coarse[b]) / 4 for j in range(5)]
    fine_losses = [loss(t) for t in fine]
    return fine[fine_losses.index(min(fine_losses))]


@pytest.mark.parametrize("seed", range(4))
def test_temperature_matches_a_loop_and_cleanlab_where_its_counting_is_right(seed: int) -> None:
    votes, probs, _, _ = case(seed, single=False)
    items, _, classes = votes
    ours = best_temperature(items, classes, probs)
    assert ours == pytest.approx(loop_temperature(items, classes, probs), abs=1e-12)
    # Rows whose votes cover every class are counted alike by cleanlab.
    rng = np.random.default_rng(seed)
    n, c = 25, 3
    full = np.column_stack([rng.integers(0, c, n), np.tile(np.arange(c), (n, 1))])
    full = full.astype(np.float64)
    p = rng.dirichlet(np.ones(c), n)
    assert class_counted_temperature(full, p) == pytest.approx(find_best_temp_scaler(full, p))


def test_temperature_sharpens_a_timid_model() -> None:
    rng = np.random.default_rng(0)
    n, c = 200, 4
    truth = rng.integers(0, c, n)
    # A model that is right but timid: its probabilities want a temperature below 1.
    probs = np.full((n, c), 0.2)
    probs[np.arange(n), truth] = 0.4
    items = np.repeat(np.arange(n), 2)
    classes = np.repeat(truth, 2)
    t = best_temperature(items, classes, probs)
    assert t < 1.0


def test_more_agreeing_votes_raise_the_score_and_unlabelled_compete() -> None:
    """An item with one vote scores lower (asks sooner) than the same item with three agreeing
    votes; an unlabelled item the model is unsure of scores below a confident labelled one."""
    c = 3
    probs = np.array([[0.6, 0.3, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8]])
    items = np.array([0, 1, 1, 1, 2, 2, 3, 3])
    annotators = np.array([0, 0, 1, 2, 0, 1, 1, 2])
    classes = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    unsure = np.full((1, c), 1.0 / c) + np.array([[0.01, 0.0, -0.01]])
    labelled, unlabelled = activelab_scores(
        items, annotators, classes, num_annotators=3, probs=probs, probs_unlabelled=unsure
    )
    assert labelled[0] < labelled[1]
    assert unlabelled[0] < labelled.max()
    assert ((labelled >= 0) & (labelled <= 1)).all()


def test_refuses_bad_input() -> None:
    probs = np.full((2, 2), 0.5)
    with pytest.raises(ValueError, match="at least one vote"):
        activelab_scores(
            np.array([0]),
            np.array([0]),
            np.array([1]),
            num_annotators=1,
            probs=probs,
            probs_unlabelled=probs,
        )
    with pytest.raises(ValueError, match="once only"):
        activelab_scores(
            np.array([0, 0, 1]),
            np.array([0, 0, 0]),
            np.array([1, 1, 0]),
            num_annotators=1,
            probs=probs,
            probs_unlabelled=probs,
        )
    with pytest.raises(ValueError, match="columns"):
        activelab_scores(
            np.array([0, 1]),
            np.array([0, 0]),
            np.array([1, 0]),
            num_annotators=1,
            probs=probs,
            probs_unlabelled=np.full((2, 3), 1 / 3),
        )
