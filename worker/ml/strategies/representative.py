"""Representative selection on an embedding: TypiClust, ProbCover, suggestive annotation.

The embedding is the model's penultimate features (``embedding="features"``) or, for a cold
start with no trained model, the flattened inputs (``embedding="input"``: strong when the items
are already feature vectors, e.g. an ``mlp`` project on embeddings), L2-normalised as the
official TypiClust/ProbCover code normalises its self-supervised features. ``compute`` embeds
the pool (pointwise, shardable); ``compute_labelled`` embeds the labelled set; ``choose`` runs
the method's global step once.

Picks are exact for a given embedding; ties among equal scores (degrees, gains) go by the seeded
item key (``tie_keys``), where the official code takes the lowest index.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Literal

import numpy as np
import torch
from torch import Tensor

from worker.ml.data import PoolSource
from worker.ml.evaluation import predict_features_and_proba
from worker.ml.kernels.kmeans import kmeans, squared_distances
from worker.ml.models import Classifier
from worker.ml.strategies.base import (
    Arrays,
    PenultimateFeatures,
    ScoringContext,
    Selection,
    Strategy,
    check_budget,
    finalise,
    pool_size,
    tie_keys,
    top_b,
)
from worker.ml.strategies.registry import register

Embedding = Literal["features", "input"]
_CHUNK = 2048


def embed(model: Classifier, pool: PoolSource, device: torch.device, kind: Embedding) -> Tensor:
    """(N, D) float32 rows of unit L2 norm (a zero row stays zero)."""
    if kind == "input":
        parts = [x.reshape(len(x), -1).float().cpu() for x in pool.batches()]
        x = torch.cat(parts) if parts else torch.zeros(0, 0)
    else:
        x, _ = predict_features_and_proba(model, pool, device)
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


class EmbeddingStrategy(Strategy):
    """compute -> {"features": (N, D)}; compute_labelled -> {"features": (M, D)}."""

    needs_labelled = True
    embedding_kinds: ClassVar[tuple[str, ...]] = ("features", "input")

    def __init__(self, *, embedding: Embedding = "features", candidates: int | None = None):
        super().__init__(candidates=candidates)
        if embedding not in self.embedding_kinds:
            raise ValueError(f"embedding must be one of {self.embedding_kinds}, got {embedding!r}")
        self.embedding: Embedding = embedding

    @property
    def runs_cold(self) -> bool:
        return self.embedding == "input"

    def compute(self, ctx: ScoringContext) -> Arrays:
        return {"features": embed(ctx.model, ctx.pool, ctx.device, self.embedding).numpy()}

    def compute_labelled(self, ctx: ScoringContext) -> Arrays:
        if ctx.labelled is None or len(ctx.labelled) == 0:
            return {}
        return {"features": embed(ctx.model, ctx.labelled, ctx.device, self.embedding).numpy()}


def _labelled_features(labelled: Mapping[str, np.ndarray] | None, dim: int) -> Tensor:
    if labelled and len(labelled.get("features", ())) > 0:
        return torch.from_numpy(np.asarray(labelled["features"]))
    return torch.zeros(0, dim)


# ------------------------------------------------------------------------------------ TypiClust


@register("typiclust")
class TypiClust(EmbeddingStrategy):
    """k-means of labelled + pool into min(M + B, max_clusters) clusters; cycle through the
    clusters with more than ``min_cluster_size`` items, fewest labelled first, then largest,
    taking each one's most typical unlabelled item: 1 / (mean squared distance to its
    min(k_nn, n_c // 2) nearest unlabelled cluster-mates + 1e-5)."""

    paper = (
        "Hacohen, Dekel & Weinshall, Active Learning on a Budget: Opposite Strategies Suit High "
        "and Low Budgets, ICML 2022 (reference: avihu111/TypiClust, pycls/al/typiclust.py)"
    )
    summary = "the most typical unlabelled item of each of the largest uncovered k-means clusters"

    def __init__(
        self,
        *,
        k_nn: int = 20,
        min_cluster_size: int = 5,
        max_clusters: int = 500,
        embedding: Embedding = "features",
        candidates: int | None = None,
    ) -> None:
        super().__init__(embedding=embedding, candidates=candidates)
        for key, value, low in (
            ("k_nn", k_nn, 1),
            ("min_cluster_size", min_cluster_size, 0),
            ("max_clusters", max_clusters, 1),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{key} must be an int >= {low}, got {value!r}")
        self.k_nn = k_nn
        self.min_cluster_size = min_cluster_size
        self.max_clusters = max_clusters

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
        pool = torch.from_numpy(np.asarray(arrays["features"])).to(torch.float64)
        lab = _labelled_features(labelled_arrays, pool.shape[1]).to(torch.float64)
        m = lab.shape[0]
        b = min(int(budget), n)
        if n == 0:
            return finalise([], np.zeros(0))
        everything = torch.cat([lab, pool])
        clusters = kmeans(everything, min(m + b, self.max_clusters) if b else 1, seed).numpy()
        picked, scores = typiclust_pick(
            everything.numpy(), clusters, m, b, self.k_nn, self.min_cluster_size
        )
        return finalise(picked, scores)


def typicality(feats: np.ndarray, k_nn: int) -> np.ndarray:
    """(n,) 1 / (mean squared distance to the k_nn nearest other rows + 1e-5); a lone row gets
    the largest value, as the reference's empty neighbour list makes it the argmax."""
    n = feats.shape[0]
    k = min(k_nn, n // 2)
    if k == 0:
        return np.full(n, np.inf)
    x = torch.from_numpy(feats)
    d = squared_distances(x, x)
    d.fill_diagonal_(float("inf"))
    nearest = torch.topk(d, k, dim=1, largest=False).values
    return (1.0 / (nearest.mean(dim=1) + 1e-5)).numpy()


def typiclust_pick(
    feats: np.ndarray, clusters: np.ndarray, m: int, budget: int, k_nn: int, min_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """TypiClust's selection loop over rows ``feats`` (labelled rows first, ``m`` of them) with
    k-means labels ``clusters``. Returns pool positions (row - m) in pick order and (N,) scores:
    typicality within the item's cluster (its unlabelled members), at pick time if picked."""
    n = feats.shape[0] - m
    labels = clusters.astype(np.int64).copy()
    ids, sizes = np.unique(labels, return_counts=True)
    existing = np.bincount(labels[:m], minlength=int(labels.max()) + 1)[ids]
    keep = sizes > min_size
    if not keep.any():  # a tiny pool: every cluster is "too small"; use them all
        keep[:] = True
    ids, sizes, existing = ids[keep], sizes[keep], existing[keep]
    # Fewest labelled first, then largest; cluster id breaks the rest (a stable sort).
    order = ids[np.lexsort((ids, -sizes, existing))]
    labels[:m] = -1
    scores = np.zeros(n)
    for c in np.unique(clusters[m:]):
        members = np.nonzero(labels == c)[0]
        scores[members - m] = typicality(feats[members], k_nn)
    picked: list[int] = []
    step = 0
    while len(picked) < budget:
        for _ in range(len(order)):
            members = np.nonzero(labels == order[step % len(order)])[0]
            step += 1
            if len(members):
                break
        else:
            break  # every kept cluster is used up
        typ = typicality(feats[members], k_nn)
        best = int(np.argmax(typ))
        row = int(members[best])
        picked.append(row - m)
        scores[row - m] = typ[best]
        labels[row] = -1
    if len(picked) < budget:  # clusters dropped as too small still hold items
        rest = [i for i in np.argsort(-scores, kind="stable") if i not in set(picked)]
        picked.extend(int(i) for i in rest[: budget - len(picked)])
    return np.asarray(picked, dtype=np.int64), np.where(np.isfinite(scores), scores, 1e5)


# ------------------------------------------------------------------------------------ ProbCover


@register("probcover")
class ProbCover(EmbeddingStrategy):
    """Greedy max coverage of delta-balls: x covers y when ||x - y|| < delta; items covered by
    the labelled set start covered; each pick is the item covering the most uncovered items.
    ``delta=None``: the largest delta whose balls are pure (one k-means cluster, K = classes)
    around at least ``purity`` of the items, as the paper chooses it, computed exactly."""

    paper = (
        "Yehuda, Dekel, Hacohen & Weinshall, Active Learning Through a Covering Lens, NeurIPS "
        "2022 (reference: avihu111/TypiClust, pycls/al/prob_cover.py)"
    )
    summary = "greedy max coverage of delta-balls on the embedding, from the labelled set"

    def __init__(
        self,
        *,
        delta: float | None = None,
        purity: float = 0.95,
        embedding: Embedding = "features",
        candidates: int | None = None,
    ) -> None:
        super().__init__(embedding=embedding, candidates=candidates)
        if delta is not None and (
            isinstance(delta, bool) or not isinstance(delta, int | float) or not delta > 0
        ):
            raise ValueError(f"delta must be None or a number > 0, got {delta!r}")
        if isinstance(purity, bool) or not isinstance(purity, int | float) or not 0 < purity <= 1:
            raise ValueError(f"purity must be a number in (0, 1], got {purity!r}")
        self.delta = None if delta is None else float(delta)
        self.purity = float(purity)

    def compute(self, ctx: ScoringContext) -> Arrays:
        arrays = super().compute(ctx)
        # The class count sets K of the purity clustering; one byte per item carries it.
        num_classes = int(getattr(ctx.model, "num_classes", 2))
        arrays["classes"] = np.full(len(ctx.pool), num_classes, dtype=np.int16)
        return arrays

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
        if n == 0:
            return finalise([], np.zeros(0))
        pool = torch.from_numpy(np.asarray(arrays["features"])).to(torch.float64)
        lab = _labelled_features(labelled_arrays, pool.shape[1]).to(torch.float64)
        everything = torch.cat([lab, pool])
        delta = self.delta
        if delta is None:
            k = int(np.asarray(arrays["classes"])[0])
            delta = purity_delta(everything, k, self.purity, seed)
        keys = tie_keys(seed, np.arange(n) if ids is None else np.asarray(ids))
        picked, scores = probcover_pick(everything, lab.shape[0], int(budget), delta, keys)
        return finalise(picked, scores)


def _distances(x: Tensor, rows: slice) -> Tensor:
    return squared_distances(x[rows], x).sqrt()


def purity_delta(x: Tensor, k: int, purity: float, seed: int) -> float:
    """The largest delta for which at least ``purity`` of the rows have a pure delta-ball
    (every row within distance < delta in the same k-means cluster, K = k).

    A row's ball is pure iff delta <= r_i, its distance to the nearest row of another cluster,
    so purity(delta) = mean(r >= delta) and the answer is an order statistic of r.
    """
    n = x.shape[0]
    labels = kmeans(x, max(k, 2), seed)
    r = torch.full((n,), float("inf"), dtype=torch.float64)
    for s in range(0, n, _CHUNK):
        d = _distances(x, slice(s, s + _CHUNK))
        d[labels[s : s + _CHUNK, None] == labels[None, :]] = float("inf")
        r[s : s + _CHUNK] = d.min(dim=1).values
    finite = torch.sort(r).values
    m = min(int(np.floor((1.0 - purity) * n + 1e-9)), n - 1)
    delta = float(finite[m])
    if not np.isfinite(delta):  # one cluster only: every ball is pure
        delta = float(_distances(x, slice(0, n)).max()) + 1.0
    return delta


def probcover_pick(
    x: Tensor, m: int, budget: int, delta: float, keys: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy coverage over rows ``x`` (labelled first, ``m`` of them); pool positions in pick
    order and (N,) scores: new items covered at pick time (picked) or by the end (the rest).

    Edges x -> y for ||x - y|| < delta, kept as two sorted edge lists (never a dense N x N);
    the degree of a row counts its uncovered out-neighbours. Ties: smallest ``keys``. When
    nothing is left to cover, the rest go by ``keys`` (the reference would re-pick row 0).
    """
    total = x.shape[0]
    n = total - m
    src_parts, dst_parts = [], []
    for s in range(0, total, _CHUNK):
        hit = torch.nonzero(_distances(x, slice(s, s + _CHUNK)) < delta)
        src_parts.append(hit[:, 0].numpy() + s)
        dst_parts.append(hit[:, 1].numpy())
    src = np.concatenate(src_parts) if src_parts else np.zeros(0, np.int64)
    dst = np.concatenate(dst_parts) if dst_parts else np.zeros(0, np.int64)
    out_start = np.searchsorted(src, np.arange(total + 1))  # src is sorted by construction
    by_dst = np.argsort(dst, kind="stable")
    in_src = src[by_dst]
    in_start = np.searchsorted(dst[by_dst], np.arange(total + 1))

    covered = np.zeros(total, dtype=bool)
    degree = np.bincount(src, minlength=total).astype(np.int64)

    def cover(rows: np.ndarray) -> None:
        new = np.unique(rows[~covered[rows]])
        covered[new] = True
        if len(new):
            losing = np.concatenate([in_src[in_start[y] : in_start[y + 1]] for y in new])
            np.subtract.at(degree, losing, 1)

    if m:
        cover(dst[: out_start[m]])
    picked: list[int] = []
    scores = np.zeros(n)
    available = np.ones(n, dtype=bool)
    for _ in range(min(budget, n)):
        deg = np.where(available, degree[m:], -1)
        top = deg.max()
        if top <= 0:
            break
        tied = np.nonzero(deg == top)[0]
        best = int(tied[np.argmin(keys[tied])])
        picked.append(best)
        scores[best] = top
        available[best] = False
        row = m + best
        cover(dst[out_start[row] : out_start[row + 1]])
    rest = np.nonzero(available)[0]
    scores[rest] = degree[m:][rest]
    if len(picked) < min(budget, n):
        fill = rest[np.argsort(keys[rest], kind="stable")][: min(budget, n) - len(picked)]
        picked.extend(int(i) for i in fill)
    return np.asarray(picked, dtype=np.int64), scores.astype(np.float64)


# ------------------------------------------------------------------------ suggestive annotation


@register("suggestive")
class SuggestiveAnnotation(PenultimateFeatures):
    """Top K = uncertain_factor x B items by the variance of a bootstrap ensemble's posteriors,
    then greedy max-cover of the pool: add the candidate that most raises
    F(S_a, S_u) = sum over the pool of the best cosine similarity to S_a, B times.

    The ensemble: ``members`` softmax-regression heads on the model's features, each fitted
    (full-batch L-BFGS from zero) to a bootstrap resample of the labelled set drawn with
    ``default_rng([seed, member])``; uncertainty = mean over classes of the members' variance.
    """

    paper = (
        "Yang, Zhang, Chen, Zhang & Chen, Suggestive Annotation: A Deep Active Learning "
        "Framework for Biomedical Image Segmentation, MICCAI 2017"
    )
    summary = (
        "top uncertain by a bootstrap ensemble, then greedy max-cover of the pool on feature "
        "cosine similarity"
    )
    needs_labelled = True

    def __init__(
        self,
        *,
        members: int = 4,
        uncertain_factor: int = 2,
        weight_decay: float = 1e-4,
        candidates: int | None = None,
    ) -> None:
        super().__init__(candidates=candidates)
        for key, value in (("members", members), ("uncertain_factor", uncertain_factor)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{key} must be an int >= 1, got {value!r}")
        if (
            isinstance(weight_decay, bool)
            or not isinstance(weight_decay, int | float)
            or not weight_decay >= 0
        ):
            raise ValueError(f"weight_decay must be a number >= 0, got {weight_decay!r}")
        self.members = members
        self.uncertain_factor = uncertain_factor
        self.weight_decay = float(weight_decay)

    def compute_labelled(self, ctx: ScoringContext) -> Arrays:
        if ctx.labelled is None or len(ctx.labelled) == 0 or ctx.labelled_targets is None:
            return {}
        feats, _ = predict_features_and_proba(ctx.model, ctx.labelled, ctx.device)
        targets = np.asarray(ctx.labelled_targets, dtype=np.float64)
        if targets.shape[0] != feats.shape[0]:
            raise ValueError(f"{targets.shape[0]} labelled targets for {feats.shape[0]} items")
        return {"features": feats.numpy(), "targets": targets}

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
        if not labelled_arrays or "targets" not in labelled_arrays:
            raise ValueError("suggestive annotation needs the labelled items' targets")
        feats = torch.from_numpy(np.asarray(arrays["features"])).to(torch.float64)
        uncertainty = bootstrap_variance(
            torch.from_numpy(np.asarray(labelled_arrays["features"])).to(torch.float64),
            torch.from_numpy(np.asarray(labelled_arrays["targets"])).to(torch.float64),
            feats,
            self.members,
            self.weight_decay,
            seed,
        )
        b = min(int(budget), n)
        shortlist = top_b(uncertainty, min(n, self.uncertain_factor * b), seed, ids).indices
        keys = tie_keys(seed, np.arange(n) if ids is None else np.asarray(ids))
        picked = max_cover(feats, shortlist, b, keys)
        return finalise(picked, uncertainty)


def fit_softmax_head(
    feats: Tensor, targets: Tensor, weight_decay: float, max_iter: int = 100
) -> tuple[Tensor, Tensor]:
    """Multinomial logistic regression (W (C, F), b (C,)) by full-batch L-BFGS from zero:
    soft-target cross-entropy + weight_decay/2 ||W||^2. Deterministic."""
    num_classes = targets.shape[1]
    w = torch.zeros(num_classes, feats.shape[1], dtype=feats.dtype, requires_grad=True)
    b = torch.zeros(num_classes, dtype=feats.dtype, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        logp = torch.log_softmax(feats @ w.T + b, dim=1)
        loss = -(targets * logp).sum(dim=1).mean() + 0.5 * weight_decay * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), b.detach()


def bootstrap_variance(
    lab_feats: Tensor, lab_targets: Tensor, pool: Tensor, members: int, wd: float, seed: int
) -> np.ndarray:
    """(N,) mean over classes of the variance over members of the heads' posteriors."""
    m = lab_feats.shape[0]
    probs = []
    for k in range(members):
        rows = np.random.default_rng([seed, k]).integers(0, m, size=m)
        w, b = fit_softmax_head(lab_feats[rows], lab_targets[rows], wd)
        probs.append(torch.softmax(pool @ w.T + b, dim=1))
    stacked = torch.stack(probs)  # (members, N, C)
    return stacked.var(dim=0, unbiased=False).mean(dim=1).numpy()


def max_cover(feats: Tensor, shortlist: np.ndarray, budget: int, keys: np.ndarray) -> np.ndarray:
    """Greedy: S_a grows by the shortlisted item with the largest gain in
    sum_x max_{s in S_a} cos(s, x) over every pool row x (an empty S_a counts as -1)."""
    unit = feats / feats.norm(dim=1, keepdim=True).clamp_min(1e-12)
    sims = unit[torch.from_numpy(np.asarray(shortlist, dtype=np.int64))] @ unit.T  # (K, N)
    best = torch.full((feats.shape[0],), -1.0, dtype=sims.dtype)
    left = list(range(len(shortlist)))
    picked: list[int] = []
    for _ in range(min(budget, len(shortlist))):
        gains = (sims[left] - best[None, :]).clamp_min(0.0).sum(dim=1).numpy()
        order = np.lexsort((keys[shortlist[left]], -gains))
        j = left[int(order[0])]
        picked.append(int(shortlist[j]))
        best = torch.maximum(best, sims[j])
        left.remove(j)
    return np.asarray(picked, dtype=np.int64)
