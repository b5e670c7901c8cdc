"""Uncertainty scores and random sampling against slow, obvious references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from worker.ml.data import TensorPool
from worker.ml.models import Classifier
from worker.ml.strategies import ScoringContext, get_strategy
from worker.ml.strategies.base import tie_keys


class LogitModel(Classifier):
    """Identity features and identity head: inputs are the logits themselves."""

    def __init__(self, num_classes: int) -> None:
        super().__init__(nn.Identity(), num_classes, num_classes, 0.0, "logit_model")
        with torch.no_grad():
            self.head.weight.copy_(torch.eye(num_classes))
            self.head.bias.zero_()


def _ctx(probs: np.ndarray, batch_size: int = 4) -> ScoringContext:
    logits = torch.log(torch.tensor(probs, dtype=torch.float32).clamp_min(1e-30))
    return ScoringContext(
        model=LogitModel(probs.shape[1]),
        pool=TensorPool(logits, batch_size),
        labelled=None,
        device=torch.device("cpu"),
        seed=0,
        batch_size=batch_size,
    )


def _probs(n: int = 9, c: int = 4, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(c), size=n)
    p[0] = [1.0] + [0.0] * (c - 1)  # a zero probability must give 0 * log 0 = 0
    return p


def _pool_probs(ctx: ScoringContext) -> list[list[float]]:
    with torch.no_grad():
        x = torch.cat(list(ctx.pool.batches()))
        return torch.softmax(ctx.model(x), 1).double().tolist()


def test_entropy_matches_python_loop() -> None:
    ctx = _ctx(_probs())
    scores = get_strategy("entropy").compute(ctx)["scores"]
    expected = [-sum(q * math.log(q) for q in row if q > 0) for row in _pool_probs(ctx)]
    assert scores.shape == (9,)
    assert scores == pytest.approx(expected, abs=1e-6)
    assert scores[0] == pytest.approx(0.0, abs=1e-9)


def test_margin_and_least_confidence_match_python_loop() -> None:
    ctx = _ctx(_probs())
    rows = _pool_probs(ctx)
    margin = get_strategy("margin").compute(ctx)["scores"]
    lc = get_strategy("least_confidence").compute(ctx)["scores"]
    exp_margin = [-(sorted(r)[-1] - sorted(r)[-2]) for r in rows]
    exp_lc = [1 - max(r) for r in rows]
    assert margin == pytest.approx(exp_margin, abs=1e-6)
    assert lc == pytest.approx(exp_lc, abs=1e-6)


def test_top_b_order_and_ties() -> None:
    strat = get_strategy("entropy")
    scores = np.array([0.1, 0.5, 0.5, 0.9, np.nan, 0.5])
    sel = strat.choose({"scores": scores}, 4, seed=0)
    tied = sorted([1, 2, 5], key=lambda i: tie_keys(0, np.arange(6))[i])
    assert sel.indices.tolist() == [3, *tied]
    assert sel.scores.shape == (6,)
    assert strat.choose({"scores": scores}, 10, seed=0).indices.tolist() == [3, *tied, 0, 4]
    assert strat.choose({"scores": scores}, 0, seed=0).indices.tolist() == []
    with pytest.raises(ValueError, match="budget"):
        strat.choose({"scores": scores}, -1, seed=0)


def test_random_is_uniform_ish_and_seeded() -> None:
    n = 50
    pool = TensorPool(torch.zeros(n, 1), 8)
    strat = get_strategy("random")
    counts = np.zeros(n)
    for seed in range(400):
        ctx = ScoringContext(LogitModel(2), pool, None, torch.device("cpu"), seed, 8)
        sel = strat.select(ctx, 10)
        counts[sel.indices] += 1
    # each item is picked with probability 1/5: 80 of 400 expected, sd ~8
    assert counts.min() > 45
    assert counts.max() < 115
