"""Seeded k-means (k-means++ seeding, then Lloyd's iterations) for TypiClust and ProbCover.

Written here rather than taken from scikit-learn, which the worker's runtime does not install;
``tests/ml/test_representative.py`` checks it finds scikit-learn's partition on separated
clusters. Distances in row chunks: memory O(N k), never N x N.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

_CHUNK = 4096


def squared_distances(x: Tensor, centers: Tensor) -> Tensor:
    """(N, D), (k, D) -> (N, k) squared Euclidean distances, clamped at 0."""
    out = [
        (
            (x[s : s + _CHUNK] * x[s : s + _CHUNK]).sum(1, keepdim=True)
            - 2.0 * x[s : s + _CHUNK] @ centers.T
            + (centers * centers).sum(1)[None, :]
        ).clamp_min(0.0)
        for s in range(0, x.shape[0], _CHUNK)
    ]
    return torch.cat(out) if out else x.new_zeros(0, centers.shape[0])


def kmeans(x: Tensor, k: int, seed: int, max_iter: int = 100) -> Tensor:
    """Cluster labels (N,) int64 of the rows of ``x`` (N, D) into ``min(k, N)`` clusters.

    Seeding: the first center uniform, each next one drawn with probability proportional to
    the squared distance to the nearest center (``np.random.default_rng(seed)``; the lowest
    index when every row sits on a center). Then Lloyd's iterations until no label changes or
    ``max_iter``; a cluster that empties keeps its center. Deterministic on the CPU.
    """
    x = x.to(torch.float64)
    n = x.shape[0]
    k = min(int(k), n)
    if k <= 0:
        return torch.zeros(n, dtype=torch.int64)
    rng = np.random.default_rng(seed)
    first = int(rng.integers(n))
    centers = [first]
    nearest = squared_distances(x, x[first : first + 1])[:, 0]
    for _ in range(1, k):
        total = float(nearest.sum())
        if total > 0.0:
            cum = torch.cumsum(nearest, 0)
            u = torch.tensor(rng.random() * total, dtype=torch.float64)
            idx = min(int(torch.searchsorted(cum, u, right=True)), n - 1)
            if float(nearest[idx]) == 0.0:
                idx = int(torch.nonzero(nearest > 0).max())
        else:
            taken = torch.zeros(n, dtype=torch.bool)
            taken[centers] = True
            idx = int(torch.nonzero(~taken).min())
        centers.append(idx)
        nearest = torch.minimum(nearest, squared_distances(x, x[idx : idx + 1])[:, 0])
    c = x[centers].clone()
    labels = squared_distances(x, c).argmin(dim=1)
    for _ in range(max_iter):
        sums = torch.zeros_like(c).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=k).to(x.dtype)
        filled = counts > 0
        c[filled] = sums[filled] / counts[filled, None]
        new = squared_distances(x, c).argmin(dim=1)
        if torch.equal(new, labels):
            break
        labels = new
    return labels
