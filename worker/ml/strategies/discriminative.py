"""Discriminative active learning (Gissin & Shalev-Shwartz, 2019), on the model's features.

As ``DiscriminativeRepresentationSampling`` in dsgissin/DiscriminativeActiveLearning does it:
the batch is picked in ``mini_queries`` rounds. Each round draws a random subset of the
unlabelled items, ``unlabelled_ratio`` times as many as the labelled set (all of them when
fewer), trains a fresh binary MLP (three hidden ReLU layers of 256, or 20 for inputs narrower
than 30; Adam, lr 1e-4, batch 128, class weights n / n_class) to tell labelled (0) from
unlabelled (1) features until its training accuracy over an epoch passes 0.98 or
``max_epochs``, and moves the subset's items with the highest P(unlabelled) to the labelled
side. Every random choice is seeded by (seed, round): the subset with
``default_rng([seed, round])``, the weights and shuffling with a torch generator.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor, nn

from worker.ml.strategies.base import (
    PenultimateFeatures,
    Selection,
    check_budget,
    check_ints,
    finalise,
    pool_size,
    top_b,
)
from worker.ml.strategies.registry import register

STOP_ACCURACY = 0.98
LR = 1e-4
BATCH = 128


@register("discriminative")
class DiscriminativeAL(PenultimateFeatures):
    """compute -> {"features": (N, F)}; compute_labelled -> {"features": (M, F)};
    choose -> ``mini_queries`` rounds of labelled-vs-unlabelled classification."""

    paper = (
        "Gissin & Shalev-Shwartz, Discriminative Active Learning, arXiv:1907.06347, 2019 "
        "(reference: dsgissin/DiscriminativeActiveLearning, query_methods.py)"
    )
    summary = (
        "items a labelled-vs-unlabelled classifier on the features finds least like the "
        "labelled set, in mini-queries"
    )
    needs_labelled = True

    def __init__(
        self,
        *,
        mini_queries: int = 20,
        unlabelled_ratio: int = 10,
        max_epochs: int = 1000,
        candidates: int | None = None,
    ) -> None:
        super().__init__(candidates=candidates)
        check_ints(
            mini_queries=mini_queries, unlabelled_ratio=unlabelled_ratio, max_epochs=max_epochs
        )
        self.mini_queries = mini_queries
        self.unlabelled_ratio = unlabelled_ratio
        self.max_epochs = max_epochs

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
        pool = torch.from_numpy(np.asarray(arrays["features"], dtype=np.float32))
        lab = (
            torch.from_numpy(np.asarray(labelled_arrays["features"], dtype=np.float32))
            if labelled_arrays and len(labelled_arrays.get("features", ())) > 0
            else torch.zeros(0, pool.shape[1])
        )
        b = min(int(budget), n)
        picked, scores = discriminative_rounds(
            lab, pool, b, self.mini_queries, self.unlabelled_ratio, self.max_epochs, seed, ids
        )
        return finalise(picked, scores)


def discriminative_rounds(
    lab: Tensor,
    pool: Tensor,
    budget: int,
    mini_queries: int,
    ratio: int,
    max_epochs: int,
    seed: int,
    ids: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Pool positions in pick order and (N,) scores: P(unlabelled) in the round an item was
    scored last (NaN if never in a subset)."""
    n = pool.shape[0]
    scores = np.full(n, np.nan)
    labelled = np.zeros(n, dtype=bool)
    picked: list[int] = []
    # The reference's int(amount / sub_batches) rounds; at least one item per round.
    per_round = max(1, budget // mini_queries)
    rnd = 0
    while len(picked) < budget:
        take = min(per_round, budget - len(picked))
        unlabelled = np.nonzero(~labelled)[0]
        size = min((len(lab) + len(picked)) * ratio, len(unlabelled))
        rng = np.random.default_rng([seed, rnd])
        subset = np.sort(rng.choice(unlabelled, size=max(size, take), replace=False))
        known = torch.cat([lab, pool[np.asarray(picked, dtype=np.int64)]])
        p_unlabelled = discriminator_scores(known, pool[subset], max_epochs, seed, rnd)
        scores[subset] = p_unlabelled
        sub_ids = None if ids is None else np.asarray(ids)[subset]
        best = top_b(p_unlabelled, take, seed, sub_ids).indices
        for j in subset[best]:
            picked.append(int(j))
            labelled[j] = True
        rnd += 1
    return np.asarray(picked, dtype=np.int64), scores


def discriminator(width_in: int) -> nn.Sequential:
    width = 20 if width_in < 30 else 256
    return nn.Sequential(
        nn.Linear(width_in, width),
        nn.ReLU(),
        nn.Linear(width, width),
        nn.ReLU(),
        nn.Linear(width, width),
        nn.ReLU(),
        nn.Linear(width, 2),
    )


def discriminator_scores(
    known: Tensor, unknown: Tensor, max_epochs: int, seed: int, rnd: int
) -> np.ndarray:
    """Train on known (0) vs unknown (1) rows; (len(unknown),) float64 P(unknown)."""
    if len(known) == 0:  # nothing to tell apart: every row is as unlike the labelled set
        return np.ones(len(unknown))
    x = torch.cat([known, unknown]).float()
    y = torch.cat([torch.zeros(len(known)), torch.ones(len(unknown))]).long()
    n = len(x)
    weights = torch.tensor([n / len(known), n / len(unknown)], dtype=torch.float32)
    gen = torch.Generator().manual_seed(int(np.random.default_rng([seed, rnd, 1]).integers(2**62)))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(2**62, (1,), generator=gen)))
        model = discriminator(x.shape[1])
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    loss_fn = nn.CrossEntropyLoss(weight=weights)
    with torch.enable_grad():
        model.train()
        for _ in range(max_epochs):
            order = torch.randperm(n, generator=gen)
            correct = 0
            for s in range(0, n, BATCH):
                rows = order[s : s + BATCH]
                logits = model(x[rows])
                loss = loss_fn(logits, y[rows])
                opt.zero_grad()
                loss.backward()
                opt.step()
                correct += int((logits.argmax(dim=1) == y[rows]).sum())
            # Keras' epoch accuracy: the running count over the epoch's batches.
            if correct / n > STOP_ACCURACY:
                break
    model.eval()
    with torch.no_grad():
        return torch.softmax(model(unknown.float()), dim=1)[:, 1].double().numpy()
