"""k-means patch features against slow, obvious loops on tiny images."""

from __future__ import annotations

import numpy as np
import torch

from worker.ml import patch_kmeans as pk


def _images(n: int = 5, c: int = 3, h: int = 9, w: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed))


def test_sampled_patches_are_the_pixels_at_the_drawn_places() -> None:
    images = _images()
    gen = torch.Generator().manual_seed(3)
    got = pk.sample_patches(images, 7, 3, gen)
    gen = torch.Generator().manual_seed(3)
    img = torch.randint(0, 5, (7,), generator=gen)
    row = torch.randint(0, 7, (7,), generator=gen)
    col = torch.randint(0, 6, (7,), generator=gen)
    for j in range(7):
        i, r, c = int(img[j]), int(row[j]), int(col[j])
        want = images[i, :, r : r + 3, c : c + 3].reshape(-1).double()
        assert torch.equal(got[j], want)


def test_kmeans_equals_lloyds_loop() -> None:
    x = torch.randn(60, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    got = pk.kmeans(x, 5, 4, torch.Generator().manual_seed(2))
    order = torch.randperm(60, generator=torch.Generator().manual_seed(2))[:5]
    cent = x[order].numpy().copy()
    xs = x.numpy()
    for _ in range(4):
        assign = [int(np.argmin([((row - c) ** 2).sum() for c in cent])) for row in xs]
        for k in range(5):
            members = [xs[i] for i in range(60) if assign[i] == k]
            if members:
                cent[k] = np.mean(members, axis=0)
    np.testing.assert_allclose(got.numpy(), cent, rtol=1e-10, atol=1e-12)


def test_encoding_equals_a_per_position_loop() -> None:
    images = _images(n=2, h=8, w=9)
    enc = pk.fit(images, pk.PatchKMeansConfig(patch=3, centroids=4, patches=200), seed=0)
    got = enc(images).double()
    assert got.shape == (2, 16)
    mean, whiten, cents = enc.mean.double(), enc.whiten.double(), enc.centroids.double()
    rows, cols = 8 - 3 + 1, 9 - 3 + 1
    for b in range(2):
        pooled = torch.zeros(4, 4, dtype=torch.float64)
        for r in range(rows):
            for c in range(cols):
                p = images[b, :, r : r + 3, c : c + 3].reshape(-1).double()
                p = (p - p.mean()) / torch.sqrt(p.var() + enc.norm_eps)
                z = torch.stack([torch.linalg.norm((p - mean) @ whiten - ck) for ck in cents])
                f = torch.clamp(z.mean() - z, min=0)
                quadrant = (0 if r < rows // 2 else 2) + (0 if c < cols // 2 else 1)
                pooled[quadrant] += f
        want = torch.cat([pooled[q] for q in range(4)])
        torch.testing.assert_close(got[b], want, rtol=1e-4, atol=1e-4)


def test_whitening_makes_the_patch_covariance_near_identity() -> None:
    images = _images(n=20, h=12, w=12)
    raw = pk.sample_patches(images, 4000, 3, torch.Generator().manual_seed(0))
    mean, w = pk.zca(pk.normalise(raw, 0.01), eps=1e-9)
    cov = torch.cov(((pk.normalise(raw, 0.01) - mean) @ w).T)
    # the normalisation removes one direction (each patch sums to 0), so one eigenvalue is ~0
    eig = torch.linalg.eigvalsh(cov)
    torch.testing.assert_close(eig[1:], torch.ones(26, dtype=torch.float64), atol=1e-3, rtol=0)


def test_same_seed_same_encoder_and_a_stored_state_loads_back() -> None:
    images = _images(n=10, h=12, w=12)
    cfg = pk.PatchKMeansConfig(patch=3, centroids=6, patches=500, iterations=3)
    a, b = pk.fit(images, cfg, seed=4), pk.fit(images, cfg, seed=4)
    assert torch.equal(a.centroids, b.centroids)
    assert not torch.equal(a.centroids, pk.fit(images, cfg, seed=5).centroids)
    back = pk.encoder_from_state(a.state_dict(), cfg.patch, cfg.norm_eps)
    assert torch.equal(pk.encode(back, images, batch=3), pk.encode(a, images))
