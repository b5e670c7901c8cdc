"""Properties every registered strategy must have (parametrised over the registry)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.ml.strategy_world import BATCH, POOL_N, SMALL_PARAMS, make_world
from worker.ml.strategies import available_strategies, get_strategy, merge_shards
from worker.ml.strategies.base import Strategy, top_b

SEED_SENSITIVE = {
    "random",
    "bald",
    "noise_stability",
    "badge",
    "typiclust",
    "discriminative",
    "suggestive",
}


def _strategy(name: str, **extra: object) -> Strategy:
    return get_strategy(name, **{**SMALL_PARAMS.get(name, {}), **extra})


@pytest.mark.parametrize("name", available_strategies())
def test_selection_properties(name: str) -> None:
    strategy = _strategy(name)
    world = make_world(strategy)
    for budget in (0, 1, 10, POOL_N, POOL_N + 5):
        sel = strategy.select(world.ctx(seed=3), budget)
        assert sel.indices.dtype == np.int64
        assert len(sel.indices) == min(budget, POOL_N)
        assert len(set(sel.indices.tolist())) == len(sel.indices)
        assert sel.indices.min(initial=0) >= 0
        assert sel.indices.max(initial=0) < POOL_N
        assert sel.scores.shape == (POOL_N,)
        assert sel.scores.dtype == np.float64


@pytest.mark.parametrize("name", available_strategies())
def test_same_seed_same_selection(name: str) -> None:
    first = _strategy(name)
    world = make_world(first)
    a = first.select(world.ctx(seed=5), 10)
    second = _strategy(name)
    world2 = make_world(second)  # retrained from scratch, same seeds
    b = second.select(world2.ctx(seed=5), 10)
    assert a.indices.tolist() == b.indices.tolist()
    np.testing.assert_array_equal(a.scores, b.scores)


@pytest.mark.parametrize("name", sorted(SEED_SENSITIVE))
def test_different_seed_changes_selection(name: str) -> None:
    strategy = _strategy(name)
    world = make_world(strategy)
    picks = {tuple(strategy.select(world.ctx(seed=s), 10).indices.tolist()) for s in range(3)}
    assert len(picks) > 1


@pytest.mark.parametrize("name", available_strategies())
def test_shard_rule(name: str) -> None:
    strategy = _strategy(name)
    world = make_world(strategy)
    whole = strategy.compute(world.ctx(seed=2))
    bounds = [(0, 2 * BATCH), (2 * BATCH, 4 * BATCH), (4 * BATCH, POOL_N)]
    parts = [
        strategy.compute(world.ctx(seed=2, pool=world.pool.shard(a, b), offset=a))
        for a, b in bounds
    ]
    merged = merge_shards(parts)
    assert set(merged) == set(whole)
    for key, value in whole.items():
        assert value.shape[0] == POOL_N
        np.testing.assert_array_equal(merged[key], value)  # bit-for-bit


@pytest.mark.parametrize("name", available_strategies())
def test_candidate_subsetting(name: str) -> None:
    strategy = _strategy(name, candidates=30)
    world = make_world(None, like=strategy)
    cand = strategy.candidate_indices(POOL_N, seed=4)
    assert cand is not None
    if name == "dispersion":
        # dispersion records on the pool handed to its callback: give it the candidate pool
        cb = strategy.epoch_callback(world.pool.subset(cand))
        assert cb is not None
        cb(0, world.model)
        cb(1, world.model)
    sub_ctx = world.ctx(seed=4, pool=world.pool.subset(cand))
    sub = strategy.choose(
        strategy.compute(sub_ctx),
        8,
        4,
        strategy.compute_labelled(sub_ctx) if strategy.needs_labelled else None,
        ids=cand,  # what select passes: the items' keys (here their positions in the pool)
    )
    if name != "dispersion":
        sel = strategy.select(world.ctx(seed=4), 8)
        assert sel.indices.tolist() == cand[sub.indices].tolist()
        assert np.isnan(sel.scores).sum() == POOL_N - 30
        np.testing.assert_array_equal(sel.scores[cand], sub.scores)
    assert set(cand[sub.indices].tolist()) <= set(cand.tolist())


@pytest.mark.parametrize("name", available_strategies())
def test_choose_checks_inputs(name: str) -> None:
    strategy = _strategy(name)
    world = make_world(strategy)
    arrays = strategy.compute(world.ctx())
    with pytest.raises(ValueError, match="budget"):
        strategy.choose(arrays, -1, 0)


def test_dispersion_select_with_candidates_uses_the_candidate_rows() -> None:
    strategy = _strategy("dispersion", candidates=30)
    world = make_world(strategy)  # recorded over the whole pool of POOL_N
    full = strategy.training_arrays()["scores"]
    cand = strategy.candidate_indices(POOL_N, seed=4)
    assert cand is not None
    sel = strategy.select(world.ctx(seed=4), 8)
    expected = cand[top_b(full[cand], 8, 4, ids=cand).indices]
    assert sel.indices.tolist() == expected.tolist()
    np.testing.assert_array_equal(sel.scores[cand], full[cand])
