"""The label-cleaning simulation on hand-made inputs: the loop and the metric against slow,
obvious references, the noisy-label draws, and the item choice."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from worker.sim.cleaning import (
    Trace,
    area_over_budget,
    choose_items,
    clean_loop,
    draw_labels,
    normalised_entropy,
    tempered,
)


def _reference_loop(
    initial: np.ndarray,
    true_major: np.ndarray,
    budget: int,
    score: Callable[[np.ndarray], np.ndarray],
    ask: Callable[[int], int],
    refresh_every: int,
) -> Trace:
    """The protocol read literally, in plain Python: rescore when a refresh is due, take the
    best open item (lowest index on ties), ask until the top count beats every other count,
    and recount every item's majority from scratch after each cleaned item."""
    votes = [list(map(int, row)) for row in initial]

    def correct() -> int:
        n = 0
        for row, truth in zip(votes, true_major, strict=True):
            best = max(row)
            if row.count(best) == 1 and row.index(best) == truth:
                n += 1
        return n

    done: set[int] = set()
    spent, last_refresh = 0, 0
    scores = list(score(np.array(votes)))
    trace = Trace([0], [correct()], [])
    while spent < budget and len(done) < len(votes):
        if refresh_every and spent - last_refresh >= refresh_every:
            scores = list(score(np.array(votes)))
            last_refresh = spent - (spent - last_refresh) % refresh_every
        best_i = None
        for i in range(len(votes)):
            if i not in done and (best_i is None or scores[i] > scores[best_i]):
                best_i = i
        assert best_i is not None
        while True:
            votes[best_i][ask(best_i)] += 1
            spent += 1
            ordered = sorted(votes[best_i])
            if ordered[-1] > ordered[-2]:
                break
        done.add(best_i)
        trace.relabels.append(spent)
        trace.correct.append(correct())
        trace.picked.append(best_i)
    return trace


class _Answers:
    """Scripted annotators: item i answers ``script[i]`` in turn, then its true class."""

    def __init__(self, script: dict[int, list[int]], truth: np.ndarray) -> None:
        self.script = {k: list(v) for k, v in script.items()}
        self.truth = truth

    def __call__(self, i: int) -> int:
        queue = self.script.get(i, [])
        return queue.pop(0) if queue else int(self.truth[i])


def test_hand_worked_loop() -> None:
    # 4 items, 3 classes, one noisy vote each; items 1 and 3 are wrong at the start.
    truth = np.array([0, 1, 2, 0])
    initial = np.eye(3, dtype=np.int64)[[0, 0, 2, 1]]
    scores = np.array([0.1, 0.9, 0.5, 0.7])
    # item 1 (best open score) answers 2: votes 1-0-1 tie; then 1: 1-1-1 tie; then 1: majority
    # item 3 (next best) answers 0: 1-1 tie; then 0: majority 0, correct. Budget 4 is spent.
    ask = _Answers({1: [2, 1, 1], 3: [0, 0]}, truth)
    trace, counts = clean_loop(initial, truth, budget=4, score=lambda c: scores, ask=ask)
    assert trace.picked == [1, 3]
    assert trace.relabels == [0, 3, 5]  # the item in progress is finished past the budget
    assert trace.correct == [2, 3, 4]
    assert counts[1].tolist() == [1, 2, 1]
    assert counts[3].tolist() == [2, 1, 0]
    # area on [0, 4]: (0.5+0.75)/2*3 + (0.75+0.875)/2*1, with 0.875 = value at 4 on the way to 1
    expected = ((0.5 + 0.75) / 2 * 3 + (0.75 + 0.875) / 2 * 1) / 4
    assert area_over_budget(trace.relabels, np.array(trace.correct) / 4, 4) == pytest.approx(
        expected
    )


def test_a_relabel_can_make_a_correct_item_wrong() -> None:
    truth = np.array([0, 1])
    initial = np.eye(2, dtype=np.int64)[[0, 1]]
    ask = _Answers({0: [1, 1]}, truth)  # item 0: 1 (tie), 1 -> majority 1, now wrong
    trace, _ = clean_loop(initial, truth, 2, lambda c: np.array([1.0, 0.0]), ask)
    assert trace.correct == [2, 1]
    assert trace.relabels == [0, 2]


@pytest.mark.parametrize("refresh_every", [0, 1, 3, 7])
def test_loop_matches_the_slow_reference(refresh_every: int) -> None:
    rng = np.random.default_rng(5)
    n, c = 30, 4
    dist = rng.dirichlet(np.full(c, 0.3), size=n)
    truth = dist.argmax(axis=1)
    initial = np.eye(c, dtype=np.int64)[draw_labels(dist, 1)]

    def make_ask() -> Callable[[int], int]:
        asked = np.zeros(n, np.int64)

        def ask(i: int) -> int:
            asked[i] += 1
            draw = np.random.default_rng([9, i, int(asked[i])]).choice(c, p=dist[i])
            return int(draw)

        return ask

    def make_score() -> Callable[[np.ndarray], np.ndarray]:
        calls = [0]

        def score(counts: np.ndarray) -> np.ndarray:
            calls[0] += 1
            # depends on the votes and on how often it was called, like a refreshed model
            noise = np.random.default_rng([3, calls[0]]).random(n)
            return np.round(noise + (counts.argmax(axis=1) != truth), 1)  # ties on purpose

        return score

    budget = 40
    got, _ = clean_loop(initial, truth, budget, make_score(), make_ask(), refresh_every)
    want = _reference_loop(initial, truth, budget, make_score(), make_ask(), refresh_every)
    assert got == want
    assert len(set(got.picked)) == len(got.picked)  # never the same item twice


def test_loop_stops_when_every_item_is_clean() -> None:
    truth = np.array([0, 1])
    initial = np.eye(2, dtype=np.int64)[[1, 1]]
    trace, _ = clean_loop(initial, truth, 100, lambda c: np.zeros(2), lambda i: int(truth[i]))
    assert trace.picked == [0, 1]
    assert trace.relabels == [0, 2, 3]  # item 0: 1 vote ties, the next breaks it; item 1: one
    assert trace.correct == [1, 2, 2]
    # the curve is held at its last value up to the budget
    assert area_over_budget(trace.relabels, [0.5, 1.0, 1.0], 5) == pytest.approx(
        (0.75 * 2 + 1.0 * 3) / 5
    )


def test_area_over_budget() -> None:
    assert area_over_budget([0, 10], [0.6, 0.6], 10) == pytest.approx(0.6)
    assert area_over_budget([0, 10], [0.0, 1.0], 10) == pytest.approx(0.5)
    assert area_over_budget([0, 10], [0.0, 1.0], 5) == pytest.approx(0.25)  # cut at the budget
    assert area_over_budget([0, 4], [0.0, 1.0], 8) == pytest.approx((2 + 4) / 8)  # held after
    assert area_over_budget([0], [0.7], 0) == pytest.approx(0.7)


def test_tempering_and_draws() -> None:
    p = np.array([[0.8, 0.2, 0.0], [1.0, 0.0, 0.0]])
    assert tempered(p, 1.0) == pytest.approx(p)
    q = tempered(p, 2.0)
    assert q[0] == pytest.approx(np.sqrt([0.8, 0.2, 0.0]) / np.sqrt([0.8, 0.2]).sum())
    assert q[1].tolist() == [1.0, 0.0, 0.0]  # unanimous items can never be noisy
    many = np.repeat(q[:1], 20000, axis=0)
    draws = draw_labels(many, seed=0)
    assert np.mean(draws == 1) == pytest.approx(q[0, 1], abs=0.01)
    assert not (draws == 2).any()
    assert (draw_labels(many, 0) == draws).all()
    assert (draw_labels(many, 1) != draws).any()


def test_choose_items_keeps_every_ambiguous_item() -> None:
    counts = np.zeros((50, 3), np.int64)
    counts[:, 0] = 10
    counts[[3, 17, 40], 1] = 10  # entropy log_3(2) = 0.63 > 0.3
    counts[5, 1] = 1  # entropy 0.277: not ambiguous
    h5 = -(10 / 11 * np.log(10 / 11) + 1 / 11 * np.log(1 / 11)) / np.log(3)
    assert normalised_entropy(counts)[[3, 5, 0]] == pytest.approx([np.log(2) / np.log(3), h5, 0.0])
    rows = choose_items(counts, 10, 0.3, seed=4)
    assert len(rows) == 10
    assert {3, 17, 40} <= set(rows.tolist())
    assert (np.diff(rows) > 0).all()
    assert (choose_items(counts, 10, 0.3, seed=4) == rows).all()
    with pytest.raises(ValueError, match="ambiguous"):
        choose_items(counts, 2, 0.3, seed=0)
