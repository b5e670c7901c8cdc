"""BALD, BADGE, core-set and the kernel wrappers against slow, literal references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.ml.strategy_world import BATCH, POOL_N, make_world
from worker.ml.evaluation import predict_features_and_proba
from worker.ml.kernels.gradnorm import gradnorm_scores_reference
from worker.ml.models import build_model
from worker.ml.spec import ModelSpec
from worker.ml.strategies import get_strategy
from worker.ml.strategies.bald import dropout_keep_masks
from worker.ml.strategies.diversity import (
    badge_embedding,
    gradient_scale,
    kmeans_pp_factored,
)


def _entropy(p: list[float]) -> float:
    return -sum(q * math.log(q) for q in p if q > 0)


def test_bald_matches_literal_mc_dropout_loop() -> None:
    world = make_world()
    model = world.model
    t, seed, offset = 4, 11, 100
    ctx = world.ctx(seed=seed, offset=offset)
    scores = get_strategy("bald", mc_samples=t).compute(ctx)["scores"]
    x = torch.cat(list(world.pool.batches()))
    model.eval()
    expected = []
    with torch.no_grad():
        for i in range(POOL_N):
            f = model.features(x[i : i + 1])[0]
            keep = dropout_keep_masks(seed, torch.tensor([offset + i]), t, len(f), 0.5)[0]
            runs = []
            for k in range(t):
                dropped = f * keep[k].float() / 0.5
                runs.append(torch.softmax(model.head(dropped).double(), 0).tolist())
            mean = [sum(r[c] for r in runs) / t for c in range(3)]
            expected.append(_entropy(mean) - sum(_entropy(r) for r in runs) / t)
    assert scores == pytest.approx(expected, abs=1e-6)
    assert (scores > -1e-9).all()


def test_bald_masks_behave_like_dropout() -> None:
    keep = dropout_keep_masks(0, torch.arange(200), 20, 128, 0.5)
    assert keep.shape == (200, 20, 128)
    assert abs(keep.float().mean().item() - 0.5) < 0.01
    assert not torch.equal(keep[:, 0], keep[:, 1])  # masks differ between passes


def test_bald_refuses_model_without_dropout() -> None:
    spec = ModelSpec.from_dict({"name": "resnet18", "input_shape": [3, 32, 32], "num_classes": 3})
    world = make_world()
    world.model = build_model(spec, 0)
    with pytest.raises(ValueError, match="'resnet18' has no dropout"):
        get_strategy("bald").compute(world.ctx())


def test_badge_embedding_is_the_head_weight_gradient() -> None:
    world = make_world()
    model = world.model
    feats, probs = predict_features_and_proba(model, world.pool, "cpu")
    emb = badge_embedding(gradient_scale(probs), feats)
    for i in range(0, POOL_N, 7):
        w = model.head.weight.detach().clone().requires_grad_(True)
        logits = F.linear(feats[i], w, model.head.bias.detach())
        loss = F.cross_entropy(logits[None], logits.argmax()[None])
        (grad,) = torch.autograd.grad(loss, w)
        torch.testing.assert_close(emb[i], grad.flatten(), atol=1e-6, rtol=1e-5)
    a = gradient_scale(probs)
    for i in range(3):  # explicit outer products
        outer = [a[i, c].item() * feats[i, j].item() for c in range(3) for j in range(16)]
        assert emb[i].tolist() == pytest.approx(outer, abs=1e-7)


def _kmeans_pp_reference(g: np.ndarray, budget: int, seed: int) -> tuple[list[int], np.ndarray]:
    """k-means++ on explicit embeddings with a full distance matrix (same RNG use)."""
    n = len(g)
    d = np.sqrt(((g[:, None, :] - g[None, :, :]) ** 2).sum(-1))
    rng = np.random.default_rng(seed)
    norms = np.linalg.norm(g, axis=1)
    first = int(np.argmax(norms))
    picked, scores = [first], norms.copy()
    min_d = d[first].copy()
    for _ in range(1, min(budget, n)):
        w = np.where(np.isin(np.arange(n), picked), 0.0, min_d**2)
        cum = np.cumsum(w)
        idx = int(np.searchsorted(cum, rng.random() * cum[-1], side="right"))
        scores[idx] = min_d[idx]
        picked.append(idx)
        min_d = np.minimum(min_d, d[idx])
    rest = ~np.isin(np.arange(n), picked)
    scores[rest] = min_d[rest]
    return picked, scores


def test_badge_choose_matches_explicit_kmeans_pp() -> None:
    world = make_world()
    strategy = get_strategy("badge")
    arrays = strategy.compute(world.ctx())
    a = torch.from_numpy(arrays["grad_scale"]).double()
    f = torch.from_numpy(arrays["features"]).double()
    g = badge_embedding(a, f).numpy()
    for seed in range(3):
        sel = strategy.choose(arrays, 12, seed)
        ref_idx, ref_scores = _kmeans_pp_reference(g, 12, seed)
        assert sel.indices.tolist() == ref_idx
        np.testing.assert_allclose(sel.scores, ref_scores, atol=1e-6)


def test_kmeans_pp_handles_duplicates_and_zero_mass() -> None:
    a = torch.tensor([[1.0, -1.0]] * 4)
    f = torch.tensor([[1.0], [1.0], [1.0], [1.0]])
    picks, dist = kmeans_pp_factored(a, f, 3, seed=0, device=torch.device("cpu"))
    assert picks.tolist() == [0, 1, 2]  # all identical: lowest unpicked each time
    assert dist.tolist() == pytest.approx([math.sqrt(2), 0.0, 0.0, 0.0])


def _k_center_reference(x: np.ndarray, budget: int, centers: np.ndarray | None) -> list[int]:
    d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    if centers is None:
        min_d = np.linalg.norm(x, axis=1)
    else:
        min_d = np.sqrt(((x[:, None, :] - centers[None, :, :]) ** 2).sum(-1)).min(1)
    picked: list[int] = []
    for _ in range(min(budget, len(x))):
        masked = np.where(np.isin(np.arange(len(x)), picked), -1.0, min_d)
        idx = int(np.argmax(masked))
        picked.append(idx)
        min_d = np.minimum(min_d, d[idx])
    return picked


def test_coreset_matches_brute_force_from_labelled_set() -> None:
    world = make_world()
    strategy = get_strategy("coreset")
    ctx = world.ctx()
    arrays = strategy.compute(ctx)
    labelled = strategy.compute_labelled(ctx)
    assert labelled["features"].shape == (12, 16)
    sel = strategy.choose(arrays, 15, 0, labelled)
    x = arrays["features"].astype(np.float64)
    ref = _k_center_reference(x, 15, labelled["features"].astype(np.float64))
    assert sel.indices.tolist() == ref
    # scores: distance at pick time, non-increasing along the greedy order
    picked_scores = sel.scores[sel.indices]
    assert (np.diff(picked_scores) <= 1e-6).all()
    unpicked = np.setdiff1d(np.arange(POOL_N), sel.indices)
    assert (sel.scores[unpicked] <= picked_scores[-1] + 1e-6).all()


def test_coreset_without_labelled_starts_at_origin() -> None:
    world = make_world()
    strategy = get_strategy("coreset")
    arrays = strategy.compute(world.ctx())
    sel = strategy.choose(arrays, 5, 0, None)
    x = arrays["features"].astype(np.float64)
    assert sel.indices.tolist() == _k_center_reference(x, 5, None)


def test_noise_stability_picks_by_k_center_from_origin() -> None:
    world = make_world()
    strategy = get_strategy("noise_stability", num_samples=3, zeta=0.05)
    arrays = strategy.compute(world.ctx(seed=1))
    assert arrays["deviations"].shape == (POOL_N, 3 * 3)
    sel = strategy.choose(arrays, 6, 0)
    ref = _k_center_reference(arrays["deviations"].astype(np.float64), 6, None)
    assert sel.indices.tolist() == ref
    assert sel.indices[0] == int(np.argmax(np.linalg.norm(arrays["deviations"], axis=1)))


@pytest.mark.parametrize(
    ("name", "scheme"), [("expected_gradnorm", "expected"), ("entropy_gradnorm", "entropy")]
)
def test_gradnorm_wrappers_match_reference(name: str, scheme: str) -> None:
    world = make_world()
    scores = get_strategy(name).compute(world.ctx())["scores"]
    ref = gradnorm_scores_reference(world.model, world.pool.batches(), scheme)  # type: ignore[arg-type]
    np.testing.assert_allclose(scores, ref.double().numpy(), rtol=1e-4, atol=1e-6)
    sel = get_strategy(name).choose({"scores": scores}, 5, 0)
    assert sel.indices.tolist() == np.argsort(-scores, kind="stable")[:5].tolist()


def test_dispersion_from_recorded_epochs() -> None:
    strategy = get_strategy("dispersion")
    world = make_world(strategy)  # records 3 epochs on the pool
    recorded = strategy.training_arrays()["scores"]
    assert recorded.shape == (POOL_N,)
    assert set(np.round(recorded * 3).tolist()) <= {0.0, 1.0, 2.0}
    # a shard reads its rows from ctx.recorded, as the pipeline passes them
    ctx = world.ctx(pool=world.pool.shard(BATCH, 3 * BATCH), offset=BATCH)
    ctx.recorded = {"scores": recorded[BATCH : 3 * BATCH]}
    np.testing.assert_array_equal(strategy.compute(ctx)["scores"], recorded[BATCH : 3 * BATCH])
    with pytest.raises(ValueError, match="epoch_callback"):
        get_strategy("dispersion").compute(world.ctx())
