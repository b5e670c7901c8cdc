"""Expected model change: expected gradient length (EGL) and expected model output change (EMOC).

EGL (Settles, Craven & Ray 2008; Cai et al. 2013): Σ_i p_i ‖∇_θ CE(z, i)‖ (``kernels/egl.py``).
EMOC (Käding et al. 2016): how much the model's outputs over the pool would move, in L1, if the
candidate x' were labelled y' and the model took one gradient step on that single sample,
expected over y' ~ p(·|x'):

    EMOC(x') = E_{y'} E_x ‖f(x; θ − η ∇_θ L(x', y')) − f(x; θ)‖₁

with θ the head's weight and bias and f the logits. The logits are linear in the head, so the
single-sample step's change is exactly −η (p' − e_{y'}) (φ(x')·φ(x) + 1), φ the penultimate
features, and

    EMOC(x') = η · Σ_{y'} p'_{y'} ‖p' − e_{y'}‖₁ · E_x |1 + φ(x')·φ(x)|
             = η · 2 (1 − ‖p'‖²) · E_x |1 + φ(x')·φ(x)|,

η dropped (it does not change the ranking). E_x runs over a seeded random reference subset of
the candidates (``reference`` items; all of them when fewer).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
import torch

from worker.ml.evaluation import predict_features_and_proba
from worker.ml.kernels.egl import egl_head_scores, egl_scores
from worker.ml.strategies.base import (
    Arrays,
    ScoringContext,
    Selection,
    Strategy,
    check_budget,
    pool_size,
    top_b,
)
from worker.ml.strategies.registry import register

Scope = Literal["all", "head"]


@register("egl")
class ExpectedGradientLength(Strategy):
    """score -> (N,) Σ_i p_i ‖∇_θ CE(z, i)‖₂; choose -> top-B.

    ``scope="all"``: every trainable parameter, as ``expected_gradnorm`` differentiates (C
    backward passes per batch). ``scope="head"``: the last layer only, in closed form.
    """

    paper = (
        "Settles, Craven & Ray, Multiple-Instance Active Learning, NIPS 2008 (expected "
        "gradient length); Cai, Zhang & Zhou, Maximizing Expected Model Change for Active "
        "Learning in Regression, ICDM 2013"
    )
    summary = (
        "expected gradient length sum_i p_i ||grad CE(z, i)||: the norm per class, then the "
        "expectation (expected_gradnorm takes the norm of the expectation: the entropy's gradient)"
    )

    def __init__(self, *, scope: Scope = "all", candidates: int | None = None) -> None:
        super().__init__(candidates=candidates)
        if scope not in ("all", "head"):
            raise ValueError(f"scope must be 'all' or 'head', got {scope!r}")
        self.scope: Scope = scope

    def score(self, ctx: ScoringContext) -> np.ndarray:
        if self.scope == "head":
            feats, probs = predict_features_and_proba(ctx.model, ctx.pool, ctx.device)
            return egl_head_scores(feats, probs).numpy()
        scores = egl_scores(ctx.model, ctx.pool.batches(), ctx.device)
        return scores.to(torch.float64).numpy().reshape(len(ctx.pool))


@register("emoc")
class ExpectedModelOutputChange(Strategy):
    """compute -> {"change": (N,) 2 (1 - ||p||^2), "features": (N, F)}; choose -> top-B of
    change x mean over a seeded reference subset of |1 + phi(x') . phi(x)|."""

    paper = (
        "Käding, Rodner, Freytag & Denzler, Active and Continuous Exploration with Deep Neural "
        "Networks and Expected Model Output Changes, NIPS Workshop 2016 (arXiv:1612.06129)"
    )
    summary = (
        "expected L1 change of the logits over the pool after one gradient step on the head "
        "with the candidate's label drawn from p"
    )

    def __init__(self, *, reference: int = 1000, candidates: int | None = None) -> None:
        super().__init__(candidates=candidates)
        if not isinstance(reference, int) or isinstance(reference, bool) or reference < 1:
            raise ValueError(f"reference must be an int >= 1, got {reference!r}")
        self.reference = reference

    def compute(self, ctx: ScoringContext) -> Arrays:
        feats, probs = predict_features_and_proba(ctx.model, ctx.pool, ctx.device)
        p = probs.to(torch.float64)
        # Σ_y p_y ‖p − e_y‖₁ = Σ_y p_y · 2 (1 − p_y)
        change = 2.0 * (1.0 - (p * p).sum(dim=1))
        return {"change": change.numpy(), "features": feats.numpy()}

    def choose(
        self,
        arrays: Mapping[str, np.ndarray],
        budget: int,
        seed: int,
        labelled_arrays: Mapping[str, np.ndarray] | None = None,
        ids: np.ndarray | None = None,
    ) -> Selection:
        check_budget(budget)
        n = pool_size(arrays)
        feats = torch.from_numpy(np.asarray(arrays["features"])).to(torch.float64)
        ref = reference_rows(n, self.reference, seed)
        spread = mean_abs_affinity(feats, feats[ref])
        scores = np.asarray(arrays["change"], dtype=np.float64) * spread
        return top_b(scores, budget, seed, ids)


def reference_rows(n: int, size: int, seed: int) -> np.ndarray:
    """Sorted positions of the seeded reference subset that stands in for E_x."""
    if size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng([seed, 0x454D4F43]).choice(n, size, replace=False))


def mean_abs_affinity(feats: torch.Tensor, ref: torch.Tensor, chunk: int = 4096) -> np.ndarray:
    """(N,) mean over the reference rows of |1 + f_i . r|, in row chunks (never N x N)."""
    out = [
        (1.0 + feats[s : s + chunk] @ ref.T).abs().mean(dim=1)
        for s in range(0, feats.shape[0], chunk)
    ]
    return torch.cat(out).numpy() if out else np.zeros(0)
