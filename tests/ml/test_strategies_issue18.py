"""Issue 18's selection-only strategies against slow, obvious references or independent
transcriptions of the official code, on small seeded inputs.

EGL and EMOC: the definitions computed one sample (and one class) at a time with autograd.
TypiClust and ProbCover: transcriptions of avihu111/TypiClust ``pycls/al/typiclust.py`` and
``prob_cover.py`` (pandas as there; brute-force neighbours for faiss, whose IndexFlatL2 returns
squared distances). Suggestive annotation: the max-cover objective evaluated for every
candidate set. DAL: the query loop of dsgissin/DiscriminativeActiveLearning
``DiscriminativeRepresentationSampling.query`` with the same discriminator.
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from tests.ml.strategy_world import make_world
from worker.ml.kernels.egl import egl_head_scores, egl_scores, egl_scores_reference
from worker.ml.kernels.gradnorm import gradnorm_scores
from worker.ml.kernels.kmeans import kmeans
from worker.ml.models import build_model
from worker.ml.spec import ModelSpec
from worker.ml.strategies import discriminative as dal
from worker.ml.strategies import get_strategy
from worker.ml.strategies.base import tie_keys
from worker.ml.strategies.representative import (
    bootstrap_variance,
    fit_softmax_head,
    max_cover,
    probcover_pick,
    purity_delta,
    typiclust_pick,
)

# ------------------------------------------------------------------------------------ EGL


@pytest.mark.parametrize(
    ("name", "shape"), [("mlp", [6]), ("small_cnn", [1, 16, 16]), ("resnet18", [3, 12, 12])]
)
def test_egl_batched_equals_the_one_sample_loop(name: str, shape: list[int]) -> None:
    spec = ModelSpec.from_dict({"name": name, "input_shape": shape, "num_classes": 3})
    model = build_model(spec, seed=1)
    x = torch.randn(7, *shape, generator=torch.Generator().manual_seed(2))
    fast = egl_scores(model, [x[:4], x[4:]])
    slow = egl_scores_reference(model, [x])
    np.testing.assert_allclose(fast.numpy(), slow.numpy(), rtol=2e-5)
    assert all(p.grad is None for p in model.parameters())


def test_egl_head_is_the_head_parameters_gradient() -> None:
    world = make_world()
    model = world.model
    model.eval()
    x = next(iter(world.pool.batches()))
    feats = model.features(x).detach()
    probs = torch.softmax(model.head(feats), dim=1).detach()
    expected = []
    for f, p in zip(feats, probs, strict=True):
        total = 0.0
        for i in range(len(p)):
            head = copy.deepcopy(model.head)
            nn.functional.cross_entropy(head(f[None]), torch.tensor([i])).backward()
            norm = torch.cat([head.weight.grad.flatten(), head.bias.grad]).double().norm()
            total += float(p[i]) * float(norm)
        expected.append(total)
    np.testing.assert_allclose(egl_head_scores(feats, probs).numpy(), expected, rtol=1e-5)
    strategy = get_strategy("egl", scope="head")
    np.testing.assert_allclose(
        strategy.compute(world.ctx())["scores"][: len(x)], expected, rtol=1e-5
    )


def test_egl_is_not_expected_gradnorm() -> None:
    world = make_world()
    egl = get_strategy("egl").compute(world.ctx())["scores"]
    grad = gradnorm_scores(world.model, world.pool.batches(), "expected").double().numpy()
    assert not np.allclose(egl, grad, rtol=1e-2)
    # Not a rescaling either: the two rank the pool differently.
    assert np.argsort(-egl).tolist() != np.argsort(-grad).tolist()


# ------------------------------------------------------------------------------------ EMOC


def test_emoc_equals_one_sgd_step_on_the_head_per_label() -> None:
    world = make_world()
    model = world.model
    model.eval()
    x = torch.cat(list(world.pool.batches()))
    strategy = get_strategy("emoc", reference=25)
    arrays = strategy.compute(world.ctx())
    sel = strategy.choose(arrays, 5, seed=3)
    ref_rows = np.sort(np.random.default_rng([3, 0x454D4F43]).choice(len(x), 25, replace=False))
    feats = model.features(x).detach().double()
    head = copy.deepcopy(model.head).double()
    expected = []
    for j in range(len(x)):
        p = torch.softmax(head(feats[j : j + 1]), dim=1)[0].detach()
        total = 0.0
        for y in range(len(p)):
            stepped = copy.deepcopy(head)
            loss = nn.functional.cross_entropy(stepped(feats[j : j + 1]), torch.tensor([y]))
            grads = torch.autograd.grad(loss, list(stepped.parameters()))
            with torch.no_grad():
                for param, g in zip(stepped.parameters(), grads, strict=True):
                    param -= g  # one SGD step, eta = 1
                before = head(feats[ref_rows])
                after = stepped(feats[ref_rows])
            total += float(p[y]) * float((after - before).abs().sum(dim=1).mean())
        expected.append(total)
    np.testing.assert_allclose(sel.scores, expected, rtol=1e-6)
    assert sel.indices.tolist() == np.argsort(-np.asarray(expected), kind="stable")[:5].tolist()


# ------------------------------------------------------------------------------------ k-means


def test_kmeans_finds_scikit_learns_partition_on_separated_blobs() -> None:
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(6, 4)) * 10
    x = np.concatenate([c + rng.normal(size=(30, 4)) for c in centers])
    ours = kmeans(torch.from_numpy(x), 6, seed=1).numpy()
    theirs = KMeans(n_clusters=6, n_init=10, random_state=0).fit_predict(x)
    pairs = set(zip(ours.tolist(), theirs.tolist(), strict=True))
    assert len(pairs) == 6  # the same partition up to renaming
    assert kmeans(torch.from_numpy(x), 6, seed=1).tolist() == ours.tolist()


# ------------------------------------------------------------------------------------ TypiClust


def _typiclust_transcription(
    features: np.ndarray, clusters: np.ndarray, n_lab: int, budget: int
) -> list[int]:
    """pycls/al/typiclust.py ``select_samples``, with brute-force squared-L2 neighbours."""
    min_cluster_size, k_nn = 5, 20

    def typicality(feats: np.ndarray, k: int) -> np.ndarray:
        d = ((feats[:, None, :] - feats[None, :, :]) ** 2).sum(-1)
        order = np.argsort(d, axis=1, kind="stable")
        # index 0 is the sample itself (distance 0), dropped as faiss's search result is
        near = np.take_along_axis(d, order, axis=1)[:, 1 : k + 1]
        return 1 / (near.mean(axis=1) + 1e-5)

    labels = np.copy(clusters)
    existing_indices = np.arange(n_lab)
    cluster_ids, cluster_sizes = np.unique(labels, return_counts=True)
    cluster_labeled_counts = np.bincount(labels[existing_indices], minlength=len(cluster_ids))
    df = pd.DataFrame(
        {
            "cluster_id": cluster_ids,
            "cluster_size": cluster_sizes,
            "existing_count": cluster_labeled_counts,
            "neg_cluster_size": -1 * cluster_sizes,
        }
    )
    df = df[df.cluster_size > min_cluster_size]
    df = df.sort_values(["existing_count", "neg_cluster_size"])
    labels[existing_indices] = -1
    selected = []
    for i in range(budget):
        cluster = df.iloc[i % len(df)].cluster_id
        indices = (labels == cluster).nonzero()[0]
        typ = typicality(features[indices], min(k_nn, len(indices) // 2))
        idx = indices[typ.argmax()]
        selected.append(int(idx))
        labels[idx] = -1
    return [s - n_lab for s in selected]


@pytest.mark.parametrize("seed", range(4))
def test_typiclust_picks_as_the_reference_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(5, 3)) * 4
    feats = np.concatenate([c + rng.normal(size=(rng.integers(8, 40), 3)) for c in centers])
    rng.shuffle(feats)
    n_lab, budget = 6, 9
    clusters = kmeans(torch.from_numpy(feats), n_lab + budget, seed).numpy()
    picked, scores = typiclust_pick(feats, clusters, n_lab, budget, 20, 5)
    assert picked.tolist() == _typiclust_transcription(feats, clusters, n_lab, budget)
    assert scores.shape == (len(feats) - n_lab,)
    strategy = get_strategy("typiclust")
    sel = strategy.choose(
        {"features": feats[n_lab:].astype(np.float32)},
        budget,
        seed,
        {"features": feats[:n_lab].astype(np.float32)},
    )
    assert sel.indices.tolist() == picked.tolist()


# ------------------------------------------------------------------------------------ ProbCover


def _probcover_transcription(feats: np.ndarray, n_lab: int, budget: int, delta: float) -> list[int]:
    """pycls/al/prob_cover.py ``construct_graph`` (every row, not only whole batches of 500)
    and ``select_samples``."""
    x = torch.tensor(feats)
    dist = torch.cdist(x, x)
    mask = dist < delta
    xs, ys = mask.nonzero().T
    df = pd.DataFrame({"x": xs.numpy(), "y": ys.numpy(), "d": dist[mask].numpy()})
    n_all = len(feats)
    selected = []
    edge_from_seen = np.isin(df.x, np.arange(n_lab))
    covered = df.y[edge_from_seen].unique()
    cur_df = df[(~np.isin(df.y, covered))]
    for _ in range(budget):
        degrees = np.bincount(cur_df.x, minlength=n_all)
        cur = int(degrees.argmax())
        new_covered = cur_df.y[(cur_df.x == cur)].values
        cur_df = cur_df[(~np.isin(cur_df.y, new_covered))]
        covered = np.concatenate([covered, new_covered])
        selected.append(cur)
    return [s - n_lab for s in selected]


@pytest.mark.parametrize("seed", range(4))
def test_probcover_picks_as_the_reference_given_the_same_tie_order(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # Integer grid points: many equal degrees, so the tie order is exercised.
    feats = rng.integers(0, 6, size=(60, 2)).astype(np.float64)
    n_lab, budget, delta = 5, 8, 1.5
    keys = tie_keys(seed, np.arange(len(feats) - n_lab))
    picked, _ = probcover_pick(torch.from_numpy(feats), n_lab, budget, delta, keys)
    # The reference takes the lowest index among equal degrees: order the pool by our keys.
    order = np.argsort(keys, kind="stable")
    reordered = np.concatenate([feats[:n_lab], feats[n_lab:][order]])
    ref = _probcover_transcription(reordered, n_lab, budget, delta)
    covered_all = len(set(ref)) < len(ref) or min(ref) < 0
    if not covered_all:
        assert picked.tolist() == order[ref].tolist()
    else:  # the reference re-picks once all is covered; the prefix before that agrees
        k = next(i for i, r in enumerate(ref) if r < 0 or r in ref[:i])
        assert picked[:k].tolist() == order[ref[:k]].tolist()
    assert len(set(picked.tolist())) == budget


def test_probcover_delta_is_the_largest_with_enough_pure_balls() -> None:
    rng = np.random.default_rng(5)
    x = torch.from_numpy(np.concatenate([rng.normal(size=(40, 2)), rng.normal(size=(40, 2)) + 3]))
    delta = purity_delta(x, 2, 0.95, seed=0)
    labels = kmeans(x, 2, seed=0).numpy()
    d = torch.cdist(x, x).numpy()

    def purity(r: float) -> float:
        return float(np.mean([(labels[d[i] < r] == labels[i]).all() for i in range(len(x))]))

    assert purity(delta) >= 0.95
    assert purity(delta * (1 + 1e-9) + 1e-12) < 0.95 or purity(delta + 1e-6) < 0.95


# ------------------------------------------------------------------------ suggestive annotation


def test_max_cover_is_the_greedy_of_the_objective() -> None:
    rng = np.random.default_rng(1)
    feats = torch.from_numpy(np.abs(rng.normal(size=(30, 5))))
    shortlist = np.array([3, 7, 11, 19, 23, 29])
    keys = tie_keys(0, np.arange(30))
    unit = (feats / feats.norm(dim=1, keepdim=True)).numpy()

    def objective(chosen: list[int]) -> float:
        if not chosen:
            return -1.0 * len(unit)
        return float((unit @ unit[chosen].T).max(axis=1).sum())

    expected: list[int] = []
    for _ in range(4):
        gains = {s: objective([*expected, int(s)]) for s in shortlist if s not in expected}
        expected.append(max(gains, key=lambda s: (gains[s], -keys[s])))
    assert max_cover(feats, shortlist, 4, keys).tolist() == expected


def test_bootstrap_variance_is_the_members_posterior_variance() -> None:
    rng = np.random.default_rng(2)
    lab = torch.from_numpy(rng.normal(size=(12, 3)))
    targets = torch.from_numpy(np.eye(3)[rng.integers(0, 3, 12)])
    pool = torch.from_numpy(rng.normal(size=(9, 3)))
    got = bootstrap_variance(lab, targets, pool, 3, 1e-3, seed=4)
    probs = []
    for k in range(3):
        rows = np.random.default_rng([4, k]).integers(0, 12, size=12)
        w, b = fit_softmax_head(lab[rows], targets[rows], 1e-3)
        probs.append(torch.softmax(pool @ w.T + b, dim=1).numpy())
    np.testing.assert_allclose(got, np.var(np.stack(probs), axis=0).mean(axis=1), rtol=1e-12)
    assert (got > 0).all()


def test_suggestive_picks_from_the_uncertain_shortlist() -> None:
    world = make_world()
    strategy = get_strategy("suggestive", members=3)
    ctx = world.ctx(seed=1)
    arrays = strategy.compute(ctx)
    sel = strategy.choose(arrays, 6, 1, strategy.compute_labelled(ctx))
    shortlist = np.lexsort((tie_keys(1, np.arange(len(sel.scores))), -sel.scores))[:12]
    assert set(sel.indices.tolist()) <= set(shortlist.tolist())


# ------------------------------------------------------------------------------------ DAL


def _dal_transcription(
    lab: torch.Tensor, pool: torch.Tensor, amount: int, sub_batches: int, seed: int
) -> list[int]:
    """``DiscriminativeRepresentationSampling.query`` with its random subsets drawn as ours
    are (numpy's global RNG there) and the same discriminator function."""
    labeled = list(range(len(lab)))  # rows of [lab; pool]
    reps = torch.cat([lab, pool])
    unlabeled = np.setdiff1d(np.arange(len(reps)), labeled)
    rnd = 0
    size = min(len(labeled) * 10, unlabeled.size)
    unlabeled = np.sort(np.random.default_rng([seed, rnd]).choice(unlabeled, size, replace=False))
    labeled_so_far = 0
    sub_sample_size = max(1, int(amount / sub_batches))
    while labeled_so_far < amount:
        if labeled_so_far + sub_sample_size > amount:
            sub_sample_size = amount - labeled_so_far
        predictions = dal.discriminator_scores(
            reps[labeled], reps[unlabeled], max_epochs=4, seed=seed, rnd=rnd
        )
        # argpartition's top k, ordered best first (our pick order; the set is the same)
        top = np.argsort(-predictions, kind="stable")[:sub_sample_size]
        labeled = labeled + unlabeled[top].tolist()
        labeled_so_far += sub_sample_size
        rnd += 1
        rest = np.setdiff1d(np.arange(len(reps)), labeled)
        size = min(len(labeled) * 10, rest.size)
        unlabeled = np.sort(np.random.default_rng([seed, rnd]).choice(rest, size, replace=False))
    return [i - len(lab) for i in labeled[len(lab) :]]


def test_dal_rounds_follow_the_reference_query_loop() -> None:
    rng = np.random.default_rng(0)
    lab = torch.from_numpy(rng.normal(size=(3, 4)).astype(np.float32))
    pool = torch.from_numpy(rng.normal(size=(80, 4)).astype(np.float32))
    picked, _ = dal.discriminative_rounds(lab, pool, 6, 3, 10, 4, seed=7, ids=None)
    assert picked.tolist() == _dal_transcription(lab, pool, 6, 3, seed=7)


def test_dal_prefers_what_the_labelled_set_does_not_look_like() -> None:
    rng = np.random.default_rng(1)
    lab = torch.from_numpy(rng.normal(size=(20, 8)).astype(np.float32))
    near = rng.normal(size=(150, 8))
    far = rng.normal(size=(10, 8)) + 4.0
    pool = torch.from_numpy(np.concatenate([near, far]).astype(np.float32))
    picked, _ = dal.discriminative_rounds(lab, pool, 10, 2, 10, 200, seed=0, ids=None)
    # The first mini-query takes the far cluster; once some of it is labelled, the rest of it
    # looks labelled too, which is what the mini-queries are for.
    assert (picked[:5] >= 150).all()
