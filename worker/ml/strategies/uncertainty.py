"""Random sampling and the classic uncertainty-sampling scores (top-B of a pointwise score)."""

from __future__ import annotations

import numpy as np
import torch

from worker.ml.evaluation import EPS, predict_proba
from worker.ml.strategies.base import ScoringContext, Strategy
from worker.ml.strategies.positional_rng import positional_uniform64
from worker.ml.strategies.registry import register

UNCERTAINTY_PAPER = (
    "Settles, Active Learning Literature Survey, 2009; Lewis & Gale, SIGIR 1994 "
    "(least confidence); Scheffer et al., IDA 2001 (margin); Shannon entropy sampling"
)


class ProbabilityScoreStrategy(Strategy):
    """Scores that are a function of the posterior p (N, C) alone: ``from_probs``."""

    def score(self, ctx: ScoringContext) -> np.ndarray:
        probs = predict_proba(ctx.model, ctx.pool, ctx.device).to(torch.float64).numpy()
        return self.from_probs(probs)

    def from_probs(self, probs: np.ndarray) -> np.ndarray:
        raise NotImplementedError


@register("random")
class RandomStrategy(Strategy):
    """Uniform sample without replacement: top-B of a uniform score keyed by (seed, position).

    Never reads the pool's inputs. Keyed scores (rather than a permutation drawn in ``choose``)
    keep the shard rule and give each item a recorded score.
    """

    paper = "uniform random sampling baseline"
    summary = "uniform random sample without replacement; score = seeded U[0,1) per item"

    def score(self, ctx: ScoringContext) -> np.ndarray:
        positions = torch.arange(ctx.offset, ctx.offset + len(ctx.pool), dtype=torch.int64)
        return positional_uniform64(ctx.seed, positions, stream=1).numpy()


@register("least_confidence")
class LeastConfidence(ProbabilityScoreStrategy):
    paper = UNCERTAINTY_PAPER
    summary = "1 - max_c p_c"

    def from_probs(self, probs: np.ndarray) -> np.ndarray:
        return least_confidence_scores(probs)


@register("margin")
class Margin(ProbabilityScoreStrategy):
    paper = UNCERTAINTY_PAPER
    summary = "-(p_(1) - p_(2)): higher = smaller gap between the two top classes"

    def from_probs(self, probs: np.ndarray) -> np.ndarray:
        return margin_scores(probs)


@register("entropy")
class Entropy(ProbabilityScoreStrategy):
    paper = UNCERTAINTY_PAPER
    summary = "-sum_c p_c log p_c (natural log)"

    def from_probs(self, probs: np.ndarray) -> np.ndarray:
        return entropy_scores(probs)


def least_confidence_scores(probs: np.ndarray) -> np.ndarray:
    """(N, C) -> (N,) 1 - max p."""
    return 1.0 - np.asarray(probs, dtype=np.float64).max(axis=1)


def margin_scores(probs: np.ndarray) -> np.ndarray:
    """(N, C) -> (N,) -(p_top1 - p_top2)."""
    p = np.asarray(probs, dtype=np.float64)
    top2 = np.partition(p, p.shape[1] - 2, axis=1)[:, -2:]
    return -(top2[:, 1] - top2[:, 0])


def entropy_scores(probs: np.ndarray) -> np.ndarray:
    """(N, C) -> (N,) Shannon entropy in nats, p clamped at 1e-12 inside the log."""
    p = np.asarray(probs, dtype=np.float64)
    return -(p * np.log(np.clip(p, EPS, None))).sum(axis=1)
