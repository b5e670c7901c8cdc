"""Batch-diverse strategies: core-set (greedy k-center) and BADGE (k-means++ on gradients).

Both pick greedily, so ``Selection.scores`` holds the distance to the nearest chosen center at
the moment an item was picked, and the final nearest-center distance for unpicked items.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

from worker.ml.evaluation import predict_features_and_proba
from worker.ml.kernels.kcenter import greedy_k_center_with_distances
from worker.ml.strategies.base import (
    Arrays,
    PenultimateFeatures,
    ScoringContext,
    Selection,
    Strategy,
    check_budget,
    finalise,
    pool_size,
)
from worker.ml.strategies.registry import register


class DeviceChoiceStrategy(Strategy):
    """A strategy whose ``choose`` does heavy tensor work.

    ``choose_device`` (not a parameter; set by the caller) says where: None = CPU, which keeps
    the choice bit-reproducible; a GPU is much faster on large pools.
    """

    choose_device: torch.device | None = None

    def _device(self) -> torch.device:
        return self.choose_device if self.choose_device is not None else torch.device("cpu")


@register("coreset")
class CoreSet(PenultimateFeatures, DeviceChoiceStrategy):
    """compute -> {"features": (N, F) float32}; compute_labelled -> {"features": (M, F)};
    choose -> greedy k-center over the pool started from the labelled features (or, with no
    labelled items, from the origin)."""

    paper = (
        "Sener & Savarese, Active Learning for Convolutional Neural Networks: A Core-Set "
        "Approach, ICLR 2018"
    )
    summary = "greedy k-center on penultimate features, started from the labelled set"
    needs_labelled = True

    def __init__(self, *, candidates: int | None = None) -> None:
        super().__init__(candidates=candidates)

    def choose(
        self,
        arrays: Mapping[str, np.ndarray],
        budget: int,
        seed: int,
        labelled_arrays: Mapping[str, np.ndarray] | None = None,
        ids: np.ndarray | None = None,
    ) -> Selection:
        check_budget(budget)
        pool_size(arrays)
        centers = None
        if labelled_arrays and len(labelled_arrays.get("features", ())) > 0:
            centers = torch.from_numpy(np.asarray(labelled_arrays["features"]))
        return k_center_selection(arrays["features"], budget, centers, self._device())


def k_center_selection(
    features: np.ndarray, budget: int, centers: Tensor | None, device: torch.device
) -> Selection:
    """Greedy k-center over (N, D) ``features`` as a Selection (scores = distances)."""
    x = torch.from_numpy(np.asarray(features)).to(device)
    c = centers.to(device) if centers is not None else None
    idx, pick_dist, final = greedy_k_center_with_distances(x, int(budget), c)
    scores = final.to(torch.float64).cpu().numpy()
    picked = idx.cpu().numpy()
    scores[picked] = pick_dist.to(torch.float64).cpu().numpy()
    return finalise(picked, scores)


@register("badge")
class Badge(DeviceChoiceStrategy):
    """compute -> {"grad_scale": (N, C) p - onehot(argmax p), "features": (N, F)};
    choose -> k-means++ seeding on the gradient embeddings g = grad_scale (x) features.

    g_i (C*F, row-major) is the gradient of CE(head(f_i), y_hat_i) w.r.t. the head weight. It is
    never materialised: ||g_i - g_j||^2 = |a_i|^2|f_i|^2 + |a_j|^2|f_j|^2 - 2(a_i.a_j)(f_i.f_j),
    so memory stays O(N (C + F)) instead of O(N C F).
    """

    paper = (
        "Ash et al., Deep Batch Active Learning by Diverse, Uncertain Gradient Lower Bounds "
        "(BADGE), ICLR 2020"
    )
    summary = "k-means++ seeding on last-layer gradient embeddings (p - onehot(y_hat)) x features"

    def __init__(self, *, candidates: int | None = None) -> None:
        super().__init__(candidates=candidates)

    def compute(self, ctx: ScoringContext) -> Arrays:
        feats, probs = predict_features_and_proba(ctx.model, ctx.pool, ctx.device)
        return {"grad_scale": gradient_scale(probs).numpy(), "features": feats.numpy()}

    def choose(
        self,
        arrays: Mapping[str, np.ndarray],
        budget: int,
        seed: int,
        labelled_arrays: Mapping[str, np.ndarray] | None = None,
        ids: np.ndarray | None = None,
    ) -> Selection:
        check_budget(budget)
        pool_size(arrays)
        picked, dist = kmeans_pp_factored(
            torch.from_numpy(np.asarray(arrays["grad_scale"])),
            torch.from_numpy(np.asarray(arrays["features"])),
            int(budget),
            seed,
            self._device(),
        )
        return finalise(picked, dist)


def gradient_scale(probs: Tensor) -> Tensor:
    """(N, C) posteriors -> (N, C) p - onehot(argmax p) (argmax ties: lowest class)."""
    out = probs.clone()
    rows = torch.arange(probs.shape[0])
    out[rows, probs.argmax(dim=1)] -= 1.0
    return out


def badge_embedding(grad_scale: Tensor, features: Tensor) -> Tensor:
    """Explicit (N, C*F) gradient embeddings, row-major outer products (small N only)."""
    return (grad_scale[:, :, None] * features[:, None, :]).flatten(1)


def kmeans_pp_factored(
    a: Tensor, f: Tensor, budget: int, seed: int, device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """k-means++ seeding over g_i = a_i (x) f_i without forming g.

    a (N, C), f (N, F). The first center is the largest ||g|| (lowest index on ties); each next
    one is drawn with probability proportional to the squared distance to the nearest center,
    using ``np.random.default_rng(seed)``; if every remaining item sits on a center the lowest
    unpicked index is taken. Returns (B,) int64 picks in order and (N,) float64 distances (at
    pick time for picked items, the first one's being its norm; final for the rest).
    """
    n = a.shape[0]
    b = min(budget, n)
    a = a.to(device=device, dtype=torch.float64)
    f = f.to(device=device, dtype=torch.float64)
    sq = (a * a).sum(dim=1) * (f * f).sum(dim=1)  # ||g_i||^2
    rng = np.random.default_rng(seed)
    picked: list[int] = []
    dist = torch.zeros(n, dtype=torch.float64, device=device)
    if b == 0:
        return np.zeros(0, dtype=np.int64), sq.sqrt().cpu().numpy()
    min_sq = torch.empty(0, dtype=torch.float64, device=device)
    available = torch.ones(n, dtype=torch.bool, device=device)
    for step in range(b):
        if step == 0:
            idx = int(torch.argmax(sq))
            dist[idx] = sq[idx].sqrt()
        else:
            weights = torch.where(available, min_sq, torch.zeros_like(min_sq))
            total = float(weights.sum())
            if total > 0.0:
                cum = torch.cumsum(weights, dim=0)
                u = torch.tensor(rng.random() * total, dtype=torch.float64, device=device)
                idx = int(torch.searchsorted(cum, u, right=True))
                if idx >= n or not bool(available[idx]):
                    # Rounding put u at the very end: take the last item with weight.
                    idx = int(torch.nonzero(weights > 0).max())
            else:
                idx = int(torch.nonzero(available).min())
            dist[idx] = min_sq[idx].sqrt()
        picked.append(idx)
        available[idx] = False
        d_new = (sq + sq[idx] - 2.0 * (a @ a[idx]) * (f @ f[idx])).clamp_min(0.0)
        min_sq = d_new if step == 0 else torch.minimum(min_sq, d_new)
    rest = available
    dist[rest] = min_sq[rest].sqrt()
    return np.asarray(picked, dtype=np.int64), dist.cpu().numpy()
