"""Unsupervised image features from k-means on whitened patches (Coates, Lee & Ng, AISTATS 2011).

Why it is here beside SimCLR (``ssl.py``): on this project's CPU workers, with pools of a few
thousand images, contrastive training needs hundreds of epochs before its features beat a
random network, while this single layer is fitted in minutes and its features are linearly
separable enough to matter (docs/results.md §10 has the comparison on CIFAR-10H).

Fitting (``fit``), every draw from one ``torch.Generator`` seeded by ``seed``:
1. ``patches`` random P x P patches from the images, each flattened to D = C * P * P and
   normalised for brightness and contrast: (p - mean(p)) / sqrt(var(p) + ``norm_eps``);
2. ZCA whitening: W = V diag(1 / sqrt(e + ``whiten_eps``)) V^T from the patches' covariance;
3. k-means (Lloyd, ``iterations`` rounds) of the whitened patches, started from K random
   patches; an empty cluster keeps its centroid.

Encoding (``PatchKMeansEncoder.forward``): every P x P patch of an image (stride 1) is
normalised and whitened as above, z_k = ||x - c_k||, and the "triangle" activation
f_k = max(0, mean_k(z) - z_k) is sum-pooled over the four quadrants of the response map:
(B, C, H, W) in [0, 1] -> (B, 4K). The encoder is a module with buffers only, so its state dict
is the checkpoint the pretraining run stores.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class PatchKMeansConfig:
    patch: int = 6  # P
    centroids: int = 800  # K; features = 4K
    patches: int = 100_000
    iterations: int = 10
    norm_eps: float = 0.01  # in units of [0, 1] pixels
    whiten_eps: float = 0.1

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


class PatchKMeansEncoder(nn.Module):
    """(B, C, H, W) images in [0, 1] -> (B, 4K) quadrant-pooled triangle activations."""

    mean: Tensor  # (D,)
    whiten: Tensor  # (D, D)
    centroids: Tensor  # (K, D)

    def __init__(
        self, patch: int, mean: Tensor, whiten: Tensor, centroids: Tensor, norm_eps: float = 0.01
    ) -> None:
        super().__init__()
        self.patch = patch
        self.norm_eps = norm_eps
        self.register_buffer("mean", mean.float())
        self.register_buffer("whiten", whiten.float())
        self.register_buffer("centroids", centroids.float())
        self.feature_dim = 4 * centroids.shape[0]

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        p = self.patch
        cols = F.unfold(x.float(), p).transpose(1, 2)  # (B, L, D), L = (H-P+1)(W-P+1)
        white = (normalise(cols, self.norm_eps) - self.mean) @ self.whiten
        dist = torch.cdist(white, self.centroids.expand(b, -1, -1))  # (B, L, K)
        act = torch.clamp(dist.mean(dim=2, keepdim=True) - dist, min=0)
        rows, cols_ = h - p + 1, w - p + 1
        act = act.transpose(1, 2).reshape(b, -1, rows, cols_)
        hr, hc = rows // 2, cols_ // 2
        quads = (act[:, :, :hr, :hc], act[:, :, :hr, hc:], act[:, :, hr:, :hc], act[:, :, hr:, hc:])
        return torch.cat([q.sum(dim=(2, 3)) for q in quads], dim=1)


def normalise(patches: Tensor, eps: float) -> Tensor:
    """(..., D) -> (..., D): each patch at mean 0, divided by sqrt(its variance + eps)."""
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)  # unbiased, as numpy's var(ddof=1) in the paper code
    return (patches - mean) / torch.sqrt(var + eps)


def sample_patches(images: Tensor, count: int, patch: int, gen: torch.Generator) -> Tensor:
    """(N, C, H, W) -> (count, C*P*P) float64 random patches (image, row, column uniform)."""
    n, _, h, w = images.shape
    img = torch.randint(0, n, (count,), generator=gen)
    row = torch.randint(0, h - patch + 1, (count,), generator=gen)
    col = torch.randint(0, w - patch + 1, (count,), generator=gen)
    offs = torch.arange(patch)
    r = (row[:, None] + offs)[:, :, None].expand(-1, patch, patch)  # (count, P, P)
    c = (col[:, None] + offs)[:, None, :].expand(-1, patch, patch)
    picked = images[img[:, None, None], :, r, c]  # (count, P, P, C)
    return picked.permute(0, 3, 1, 2).reshape(count, -1).double()


def zca(patches: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """(M, D) -> mean (D,), whitening matrix (D, D)."""
    mean = patches.mean(dim=0)
    cov = torch.cov((patches - mean).T)
    e, v = torch.linalg.eigh(cov)
    return mean, v @ torch.diag(1.0 / torch.sqrt(e + eps)) @ v.T


def kmeans(x: Tensor, k: int, iterations: int, gen: torch.Generator) -> Tensor:
    """(M, D) -> (K, D) Lloyd's k-means from K distinct random rows; empty clusters stay put."""
    centroids = x[torch.randperm(x.shape[0], generator=gen)[:k]].clone()
    for _ in range(iterations):
        assign = assignments(x, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]
    return centroids


def assignments(x: Tensor, centroids: Tensor, chunk: int = 8192) -> Tensor:
    """(M, D), (K, D) -> (M,) index of the nearest centroid (lowest index on a tie)."""
    sq = (centroids * centroids).sum(dim=1)
    out = [
        (sq - 2.0 * part @ centroids.T).argmin(dim=1) for part in torch.split(x, chunk)
    ]  # ||x||^2 is the same for every centroid of a row
    return torch.cat(out)


def fit(images: Tensor, config: PatchKMeansConfig, seed: int) -> PatchKMeansEncoder:
    """Fit the encoder on (N, C, H, W) images in [0, 1] (the pool: no labels are read)."""
    _, _, h, w = images.shape
    if min(h, w) < 2 * config.patch:
        raise ValueError(
            f"images of {h}x{w} are too small for {config.patch}x{config.patch} patches"
        )
    gen = torch.Generator().manual_seed(seed)
    raw = sample_patches(images, config.patches, config.patch, gen)
    white_mean, whiten = zca(normalise(raw, config.norm_eps), config.whiten_eps)
    white = (normalise(raw, config.norm_eps) - white_mean) @ whiten
    k = min(config.centroids, white.shape[0])
    centroids = kmeans(white, k, config.iterations, gen)
    return PatchKMeansEncoder(config.patch, white_mean, whiten, centroids, config.norm_eps)


def encoder_from_state(state: dict[str, Tensor], patch: int, norm_eps: float) -> PatchKMeansEncoder:
    """The encoder a stored state dict describes (buffers only)."""
    return PatchKMeansEncoder(patch, state["mean"], state["whiten"], state["centroids"], norm_eps)


@torch.no_grad()
def encode(encoder: PatchKMeansEncoder, images: Tensor, batch: int = 100) -> Tensor:
    """(N, C, H, W) -> (N, 4K) float32, in batches (the response maps are large)."""
    return torch.cat([encoder(part) for part in torch.split(images, batch)])
