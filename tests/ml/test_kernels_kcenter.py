"""Greedy k-center: equal to the brute-force reference, ties to the lowest index, no NxN."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

from worker.ml.kernels import (
    greedy_k_center,
    greedy_k_center_reference,
    greedy_k_center_with_distances,
)


def _features(n: int, d: int, seed: int) -> Tensor:
    return torch.randn((n, d), generator=torch.Generator().manual_seed(seed))


def _grid(n: int, d: int, seed: int) -> Tensor:
    """Small-integer coordinates: every distance is exact in float32 and ties abound."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-2, 3, (n, d), generator=g).float()


class _LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an operator returns."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("with_centers", [False, True])
@pytest.mark.parametrize("chunk_size", [8192, 37])
def test_random_features_match_brute_force(with_centers: bool, chunk_size: int) -> None:
    x = _features(300, 12, seed=1)
    centers = _features(20, 12, seed=2) if with_centers else None
    expected = greedy_k_center_reference(x, 40, centers)
    got = greedy_k_center(x, 40, centers, chunk_size=chunk_size)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("with_centers", [False, True])
@pytest.mark.parametrize("chunk_size", [8192, 16, 1])
def test_ties_go_to_the_lowest_index_like_brute_force(with_centers: bool, chunk_size: int) -> None:
    x = _grid(120, 3, seed=3)  # 125 grid points, so duplicates and equal distances everywhere
    centers = _grid(4, 3, seed=4) if with_centers else None
    expected = greedy_k_center_reference(x, 120, centers)
    got = greedy_k_center(x, 120, centers, chunk_size=chunk_size)
    assert torch.equal(got, expected)
    assert sorted(got.tolist()) == list(range(120))  # nothing is picked twice


def test_hand_worked_ties() -> None:
    x = torch.tensor([[0.0, 0.0], [2.0, 0.0], [-2.0, 0.0], [0.0, 2.0], [0.0, -2.0]])
    # From the origin (which stays a center): 1-4 tie at 2 -> 1; then 2, 3, 4 still at 2
    # (the origin is nearer than [2, 0]) -> 2, 3, 4 in index order; point 0 last, at 0.
    idx, pick, final = greedy_k_center_with_distances(x, 5)
    assert idx.tolist() == [1, 2, 3, 4, 0]
    torch.testing.assert_close(pick, torch.tensor([2.0, 2.0, 2.0, 2.0, 0.0]))
    torch.testing.assert_close(final, torch.zeros(5))
    # From a center at (5, 0): 2 is farthest (7); then 1 (3); then 3 and 4 tie at √8 -> 3, then
    # 4; then 0 at 2.
    idx, pick, _ = greedy_k_center_with_distances(x, 5, torch.tensor([[5.0, 0.0]]))
    assert idx.tolist() == [2, 1, 3, 4, 0]
    torch.testing.assert_close(pick, torch.tensor([7.0, 3.0, 8**0.5, 8**0.5, 2.0]))
    assert torch.equal(idx, greedy_k_center_reference(x, 5, torch.tensor([[5.0, 0.0]])))


def test_starts_from_the_origin_at_the_largest_norm() -> None:
    x = _features(50, 4, seed=5)
    first = int(greedy_k_center(x, 1)[0])
    assert first == int(x.norm(dim=1).argmax())


def test_distances_are_consistent() -> None:
    x = _features(200, 6, seed=6)
    centers = _features(5, 6, seed=7)
    idx, pick, final = greedy_k_center_with_distances(x, 25, centers, chunk_size=64)
    chosen = torch.cat([centers, x[idx]])
    exact = torch.cdist(x, chosen, compute_mode="donot_use_mm_for_euclid_dist")
    torch.testing.assert_close(final, exact.min(dim=1).values, atol=1e-5, rtol=0)
    # Pick distance = distance to the centers chosen before it; farthest-first never increases.
    for step in (0, 10, 24):
        before = torch.cat([centers, x[idx[:step]]])
        want = torch.cdist(x[idx[step]][None], before, compute_mode="donot_use_mm_for_euclid_dist")
        want = want.min()
        torch.testing.assert_close(pick[step], want, atol=1e-5, rtol=0)
    assert torch.all(pick[1:] <= pick[:-1] + 1e-6)
    assert torch.all(final[idx] == 0)


def test_budget_edges() -> None:
    x = _features(10, 3, seed=8)
    assert sorted(greedy_k_center(x, 25).tolist()) == list(range(10))
    assert greedy_k_center(x, 0).numel() == 0
    idx, pick, final = greedy_k_center_with_distances(x, 0)
    assert idx.dtype == torch.long
    assert pick.numel() == 0
    torch.testing.assert_close(final, x.norm(dim=1))
    # An empty set of centers is the origin.
    assert torch.equal(greedy_k_center(x, 4, torch.zeros(0, 3)), greedy_k_center(x, 4))
    with pytest.raises(ValueError, match="centers"):
        greedy_k_center(x, 2, torch.zeros(2, 4))


def test_never_builds_an_n_by_n_matrix() -> None:
    n, d, chunk = 2000, 8, 64
    x = _features(n, d, seed=9)
    centers = _features(700, d, seed=10)
    expected = greedy_k_center_reference(x, 30, centers)
    with _LargestTensor() as probe:
        got = greedy_k_center(x, 30, centers, chunk_size=chunk)
    assert torch.equal(got, expected)
    # Largest scratch: a (chunk, 512) block of distances to centers or an (N,) vector.
    assert probe.largest <= max(n, chunk * 512, 700 * d)
    assert n <= probe.largest < n * n // 10  # (the probe does see the (N,) vectors)
