"""Greedy k-center (farthest-first traversal) without an NxN distance matrix.

Used by core-set (penultimate features, started from the labelled set) and by noise stability
(deviation vectors, started from the origin). All work is in squared Euclidean distances, which
order points exactly as the distances do; square roots are taken only for the returned values.
"""

from __future__ import annotations

import torch
from torch import Tensor

# Initial centers are compared with a chunk of points this many at a time, so the scratch block is
# at most chunk_size x _CENTER_BLOCK floats whatever the number of centers.
_CENTER_BLOCK = 512


def _working_dtype(features: Tensor) -> torch.dtype:
    # Half precision would lose the ordering of nearby distances; float64 stays float64.
    return torch.float64 if features.dtype == torch.float64 else torch.float32


def _validate(features: Tensor, centers: Tensor | None) -> None:
    if features.dim() != 2:
        raise ValueError(f"features must be (N, D), got shape {tuple(features.shape)}")
    if centers is not None and (centers.dim() != 2 or centers.shape[1] != features.shape[1]):
        raise ValueError(
            f"centers must be (M, {features.shape[1]}), got shape {tuple(centers.shape)}"
        )


def _row_sq_norms(x: Tensor, chunk_size: int) -> Tensor:
    """(N, D) -> (N,) squared row norms, chunk by chunk so no (N, D) temporary is made."""
    out = x.new_empty(x.shape[0])
    for start in range(0, x.shape[0], chunk_size):
        xs = x[start : start + chunk_size]
        torch.sum(xs * xs, dim=1, out=out[start : start + chunk_size])
    return out


def _initial_sq_dist(
    x: Tensor, sq_norms: Tensor, centers: Tensor | None, chunk_size: int
) -> Tensor:
    """Squared distance of every point to its nearest initial center, (N,).

    ``centers`` None or empty means the origin, so the result is ``sq_norms`` itself (copied).
    """
    if centers is None or centers.shape[0] == 0:
        return sq_norms.clone()
    c = centers.to(device=x.device, dtype=x.dtype)
    c_sq = _row_sq_norms(c, chunk_size)
    out = torch.empty_like(sq_norms)
    for start in range(0, x.shape[0], chunk_size):
        xs = x[start : start + chunk_size]
        best = torch.full((xs.shape[0],), float("inf"), dtype=x.dtype, device=x.device)
        for cstart in range(0, c.shape[0], _CENTER_BLOCK):
            cb = c[cstart : cstart + _CENTER_BLOCK]
            # ||x||² - 2 x·c + ||c||², a (chunk, block) scratch matrix at most.
            block = torch.addmm(sq_norms[start : start + chunk_size, None], xs, cb.T, alpha=-2.0)
            block.add_(c_sq[cstart : cstart + _CENTER_BLOCK])
            torch.minimum(best, block.min(dim=1).values, out=best)
        out[start : start + chunk_size] = best.clamp_min_(0.0)
    return out


def greedy_k_center_with_distances(
    features: Tensor,
    budget: int,
    centers: Tensor | None = None,
    *,
    chunk_size: int = 8192,
) -> tuple[Tensor, Tensor, Tensor]:
    """Farthest-first traversal, returning the distances along with the picks.

    Args:
        features: (N, D) points to choose from.
        budget: number of points B to pick; more than N picks all N, 0 or less picks none.
        centers: (M, D) already chosen centers (e.g. the labelled set), or None to start from the
            origin (so the first pick is the point of largest norm). An empty (0, D) tensor is
            treated like None.
        chunk_size: rows of ``features`` handled per step of work; the result does not depend
            on it.

    Returns:
        indices: (B,) long, in pick order.
        pick_dist: (B,) distance of each point to its nearest center at the moment it was picked.
        final_min_dist: (N,) distance of every point to its nearest center after all picks
            (0 for the picked points).

    Ties go to the lowest index. Work is O(N·(M + B)·D); extra memory is three (N,) vectors plus
    a (chunk_size, max(D, 512)) scratch block, never an NxN matrix (features that are not float32
    / float64 are first converted to a float32 copy). Computed on ``features.device``; outputs
    live there too.
    """
    _validate(features, centers)
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    n = features.shape[0]
    b = max(0, min(int(budget), n))
    dtype = _working_dtype(features)
    x = features.to(dtype).contiguous()
    sq_norms = _row_sq_norms(x, chunk_size)

    # Squared distance to the nearest center; picked points hold -1 so they are never re-picked
    # (an unpicked duplicate of a center has 0 and is still pickable once nothing else is left).
    min_sq = _initial_sq_dist(x, sq_norms, centers, chunk_size)
    scratch = torch.empty_like(sq_norms)
    indices = torch.empty(b, dtype=torch.long, device=x.device)
    pick_sq = torch.empty(b, dtype=dtype, device=x.device)

    for step in range(b):
        # argmax returns the first maximal index, which is the lowest-index tie rule.
        idx = torch.argmax(min_sq)
        indices[step] = idx
        pick_sq[step] = min_sq[idx]
        c = x[idx]
        c_sq = sq_norms[idx]
        for start in range(0, n, chunk_size):
            stop = min(start + chunk_size, n)
            out = scratch[start:stop]
            # One matrix-vector product per chunk: ||x||² - 2 x·c (+ ||c||² below).
            torch.addmv(sq_norms[start:stop], x[start:stop], c, alpha=-2.0, out=out)
        scratch.add_(c_sq).clamp_min_(0.0)
        torch.minimum(min_sq, scratch, out=min_sq)
        min_sq[idx] = -1.0

    final = min_sq.clamp_min(0.0).sqrt_()
    return indices, pick_sq.clamp_min(0.0).sqrt_(), final


def greedy_k_center(
    features: Tensor,
    budget: int,
    centers: Tensor | None = None,
    *,
    chunk_size: int = 8192,
) -> Tensor:
    """Indices (B,) long of a greedy k-center batch in pick order; see
    :func:`greedy_k_center_with_distances` for the arguments and the tie rule."""
    return greedy_k_center_with_distances(features, budget, centers, chunk_size=chunk_size)[0]


def greedy_k_center_reference(
    features: Tensor, budget: int, centers: Tensor | None = None
) -> Tensor:
    """Brute-force greedy k-center with a full (N, N) distance matrix, for tests and the benchmark.

    Same contract as :func:`greedy_k_center`: features (N, D), centers (M, D) or None (origin);
    returns (B,) long indices in pick order, ties to the lowest index.
    """
    _validate(features, centers)
    n = features.shape[0]
    b = max(0, min(int(budget), n))
    dtype = _working_dtype(features)
    x = features.to(dtype)
    sq = (x * x).sum(dim=1)
    full = (sq[:, None] - 2.0 * (x @ x.T) + sq[None, :]).clamp_min_(0.0)  # (N, N)
    if centers is None or centers.shape[0] == 0:
        min_sq = sq.clone()
    else:
        c = centers.to(device=x.device, dtype=dtype)
        to_centers = sq[:, None] - 2.0 * (x @ c.T) + (c * c).sum(dim=1)[None, :]
        min_sq = to_centers.clamp_min(0.0).min(dim=1).values
    picked = torch.zeros(n, dtype=torch.bool, device=x.device)
    order: list[int] = []
    for _ in range(b):
        masked = torch.where(picked, torch.full_like(min_sq, -1.0), min_sq)
        idx = int(torch.argmax(masked))
        order.append(idx)
        picked[idx] = True
        min_sq = torch.minimum(min_sq, full[idx])
    return torch.tensor(order, dtype=torch.long, device=x.device)
