"""Query by committee with a deep ensemble (Beluch et al., CVPR 2018; Kuo et al., MICCAI 2018).

The committee is M networks trained independently (``worker/ml/ensemble.py``; in the worker,
M tasks). With p_m(x) the softmax of member m and p̄ = mean_m p_m:

* vote entropy: the entropy of the members' hard votes, -sum_c (V_c / M) log(V_c / M),
  V_c = #members whose argmax is c (Settles 2009 eq. 3.1; ties of a member's argmax go to the
  lowest class, as ``numpy.argmax``);
* consensus entropy: H(p̄) (Settles eq. 3.2; Beluch et al.'s "ensemble entropy");
* mutual information: H(p̄) - mean_m H(p_m) (BALD with the members in place of dropout masks;
  Beluch et al.'s "ensemble BALD").

All are pointwise (shardable: no randomness at scoring time) and choose the top-B.
"""

from __future__ import annotations

import numpy as np

from worker.ml.device import resolve_device
from worker.ml.ensemble import EnsembleModel
from worker.ml.evaluation import EPS, eval_mode
from worker.ml.strategies.base import ScoringContext, Strategy
from worker.ml.strategies.registry import register

PAPER = (
    "Beluch, Genewein, Nürnberger & Köhler, The power of ensembles for active learning in "
    "image classification, CVPR 2018; Kuo et al., Cost-sensitive active learning for "
    "intracranial hemorrhage detection, MICCAI 2018"
)


def vote_entropy(probs: np.ndarray) -> np.ndarray:
    """(N, M, C) member posteriors -> (N,) entropy (nats) of the members' argmax votes."""
    p = np.asarray(probs, dtype=np.float64)
    n, m, c = p.shape
    votes = p.argmax(axis=2)  # (N, M), first maximum on ties
    counts = np.zeros((n, c), dtype=np.float64)
    np.add.at(counts, (np.repeat(np.arange(n), m), votes.reshape(-1)), 1.0)
    share = counts / m
    return -(share * np.log(np.clip(share, EPS, None))).sum(axis=1)


def consensus_entropy(probs: np.ndarray) -> np.ndarray:
    """(N, M, C) -> (N,) H(mean_m p_m) in nats."""
    mean = np.asarray(probs, dtype=np.float64).mean(axis=1)
    return -(mean * np.log(np.clip(mean, EPS, None))).sum(axis=1)


def mutual_information(probs: np.ndarray) -> np.ndarray:
    """(N, M, C) -> (N,) H(mean_m p_m) - mean_m H(p_m) in nats."""
    p = np.asarray(probs, dtype=np.float64)
    mean_h = -(p * np.log(np.clip(p, EPS, None))).sum(axis=2).mean(axis=1)
    return consensus_entropy(p) - mean_h


def member_probs(ctx: ScoringContext) -> np.ndarray:
    """(N, M, C) float64 posteriors of every member over ``ctx.pool``, eval mode."""
    model = ctx.model
    if not isinstance(model, EnsembleModel):
        raise ValueError(
            "ensemble strategies score with the members of an ensemble; the cycle trained "
            f"one {getattr(model, 'arch', type(model).__name__)!r} model"
        )
    dev = resolve_device(ctx.device)
    model.to(dev)
    out: list[np.ndarray] = []
    with eval_mode(model):
        for x in ctx.pool.batches():
            out.append(model.member_probs(x.to(dev)).cpu().numpy())
    if not out:
        return np.zeros((0, len(model), model.num_classes))
    return np.concatenate(out)


class EnsembleStrategy(Strategy):
    """score -> (N,) f(member posteriors); the default top-B choose.

    ``members`` is M: the pipeline trains M networks for the cycle (``ensemble_members``).
    """

    paper = PAPER

    def __init__(self, *, members: int = 5, candidates: int | None = None) -> None:
        super().__init__(candidates=candidates)
        if not isinstance(members, int) or isinstance(members, bool) or members < 2:
            raise ValueError(f"members must be an int >= 2, got {members!r}")
        self.members = members

    @property
    def ensemble_members(self) -> int:
        return self.members

    def score(self, ctx: ScoringContext) -> np.ndarray:
        return self.score_members(member_probs(ctx))

    def score_members(self, probs: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


@register("ensemble_vote_entropy")
class EnsembleVoteEntropy(EnsembleStrategy):
    summary = "entropy of the M members' argmax votes (QBC vote entropy)"

    def score_members(self, probs: np.ndarray) -> np.ndarray:
        return vote_entropy(probs)


@register("ensemble_consensus_entropy")
class EnsembleConsensusEntropy(EnsembleStrategy):
    summary = "H(mean_m p_m): entropy of the members' mean posterior"

    def score_members(self, probs: np.ndarray) -> np.ndarray:
        return consensus_entropy(probs)


@register("ensemble_mutual_information")
class EnsembleMutualInformation(EnsembleStrategy):
    summary = "H(mean_m p_m) - mean_m H(p_m): ensemble BALD"

    def score_members(self, probs: np.ndarray) -> np.ndarray:
        return mutual_information(probs)


__all__ = [
    "EnsembleStrategy",
    "consensus_entropy",
    "member_probs",
    "mutual_information",
    "vote_entropy",
]
