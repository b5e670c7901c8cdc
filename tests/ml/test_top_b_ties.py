"""Issue 17.4: top-B breaks exact ties by a seeded hash of (seed, item id), not by position.

The new order may differ from the old one (stable argsort: lowest position first) only inside a
group of exactly equal scores; every item whose score beats the B-th is picked either way.
"""

from __future__ import annotations

import numpy as np
import pytest

from worker.ml.strategies import get_strategy
from worker.ml.strategies.base import ScoringContext, Strategy, tie_keys, top_b


def _old_top_b(scores: np.ndarray, budget: int) -> list[int]:
    """What top-B was before: stable argsort, lowest position first among equals."""
    return np.argsort(-scores, kind="stable")[:budget].tolist()


def _reference(scores: np.ndarray, budget: int, seed: int, ids: np.ndarray) -> list[int]:
    """Plain Python: sort by (NaN last, -score, hash key, position)."""
    keys = tie_keys(seed, ids)
    rows = [
        (bool(np.isnan(s)), 0.0 if np.isnan(s) else -float(s), float(keys[i]), i)
        for i, s in enumerate(scores)
    ]
    return [r[3] for r in sorted(rows)[:budget]]


@pytest.mark.parametrize("seed", range(20))
def test_ties_change_only_the_order_among_equal_scores(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, budget = 60, 17
    # Dispersion-like scores: few distinct values, so the B-th score is shared by many items.
    scores = rng.integers(0, 8, size=n) / 8.0
    if seed % 4 == 0:
        scores[rng.choice(n, 5, replace=False)] = np.nan
    ids = rng.choice(10**6, size=n, replace=False).astype(np.int64)
    new = top_b(scores, budget, seed, ids).indices.tolist()
    old = _old_top_b(scores, budget)
    assert new == _reference(scores, budget, seed, ids)
    # Same multiset of scores picked, position by position: only equal scores swapped.
    np.testing.assert_array_equal(scores[new], scores[old])
    cut = scores[old[-1]]
    above = {i for i in range(n) if scores[i] > cut}
    assert above <= set(new)
    assert above <= set(old)


def test_the_tie_break_is_no_longer_the_position() -> None:
    scores = np.zeros(100)
    ids = np.arange(100, dtype=np.int64)
    picks = [top_b(scores, 10, seed, ids).indices for seed in range(30)]
    # Under the old rule every seed picked 0..9; now each seed picks a different ten.
    assert all(sorted(p.tolist()) != list(range(10)) for p in picks)
    assert len({tuple(sorted(p.tolist())) for p in picks}) == 30
    # Roughly uniform: item 0 is not favoured (30 draws of 10 from 100: expected 3).
    counts = np.bincount(np.concatenate(picks), minlength=100)
    assert counts.max() <= 12


def test_the_key_follows_the_item_not_its_position() -> None:
    scores = np.array([0.5, 0.9, 0.5, 0.5, 0.1, 0.5])
    ids = np.array([11, 42, 7, 1003, 5, 64], dtype=np.int64)
    picked = ids[top_b(scores, 3, seed=9, ids=ids).indices].tolist()
    perm = np.array([4, 2, 0, 5, 1, 3])
    picked_perm = ids[perm][top_b(scores[perm], 3, seed=9, ids=ids[perm]).indices].tolist()
    assert picked == picked_perm
    assert picked[0] == 42


def test_scores_without_ties_pick_as_before() -> None:
    scores = np.random.default_rng(0).random(500)
    for seed in range(5):
        assert top_b(scores, 50, seed).indices.tolist() == _old_top_b(scores, 50)


class _Constant(Strategy):
    """A score-based strategy is one ``score`` method: here every item ties."""

    name = "constant_for_test"

    def score(self, ctx: ScoringContext) -> np.ndarray:
        return np.ones(len(ctx.pool))


def test_a_score_method_is_a_whole_strategy_and_select_passes_the_ids() -> None:
    import torch

    from worker.ml.data import TensorPool

    pool = TensorPool(torch.zeros(40, 2), 8)
    ids = np.arange(1000, 1040, dtype=np.int64)
    strategy = _Constant()
    ctx = ScoringContext(None, pool, None, torch.device("cpu"), 3, 8, ids=ids)  # type: ignore[arg-type]
    sel = strategy.select(ctx, 5)
    assert sel.indices.tolist() == top_b(np.ones(40), 5, 3, ids).indices.tolist()
    assert sel.indices.tolist() != top_b(np.ones(40), 5, 3).indices.tolist()
    with pytest.raises(ValueError, match="ids"):
        strategy.select(ScoringContext(None, pool, None, torch.device("cpu"), 3, 8, ids=ids[:5]), 5)  # type: ignore[arg-type]


def test_every_score_strategy_uses_the_seeded_tie_break() -> None:
    scores = {"scores": np.zeros(30)}
    for name in ("random", "least_confidence", "margin", "entropy", "bald", "dispersion"):
        sel = get_strategy(name).choose(scores, 5, seed=4)
        assert sel.indices.tolist() == top_b(scores["scores"], 5, 4).indices.tolist()
        assert sel.indices.tolist() != [0, 1, 2, 3, 4]
