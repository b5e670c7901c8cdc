"""K-fold cross-fitting: held-out class probabilities for every labelled item.

A network fits its own noisy labels within a few epochs, after which CE(l, p) − H(p) on the
items it trained on is near zero everywhere and ranks nothing. So every score that judges a
labelled item by the model uses predictions from a model that never saw that item: the items
are split into K folds, model k trains on the other K − 1 folds and predicts fold k, and the K
held-out blocks together give one prediction per item.

The fold of an item depends only on its position in the (sorted-id) order and the seed, so
the folds of a project stay the same from cycle to cycle while its labelled set does (label
cleaning: new votes, same items), and fold model k can be fine-tuned from the last cycle's
fold model k without ever having seen its own fold.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from worker.ml.data import LoaderPool
from worker.ml.evaluation import predict_proba
from worker.ml.training import TrainConfig, TrainResult, train


def check_folds(folds: int, n: int) -> None:
    """K must split ``n`` items into folds of at least one item, with something to train on."""
    if not isinstance(folds, int) or isinstance(folds, bool) or folds < 2:
        raise ValueError(f"cross-fitting needs at least 2 folds, got {folds!r}")
    if folds > n:
        raise ValueError(f"{folds} folds need at least {folds} labelled items, there are {n}")


def fold_ids(n: int, folds: int, seed: int) -> np.ndarray:
    """(N,) int64 fold of each position: a seeded permutation dealt round-robin, so fold sizes
    differ by at most one."""
    check_folds(folds, n)
    order = np.random.default_rng([seed, 7_919]).permutation(n)
    out = np.empty(n, dtype=np.int64)
    out[order] = np.arange(n) % folds
    return out


def fold_seed(seed: int, fold: int) -> int:
    """The training seed of fold model ``fold`` (independent streams per fold)."""
    return int(np.random.SeedSequence([seed, fold]).generate_state(1)[0] & 0x7FFFFFFF)


def train_fold(
    model: nn.Module,
    dataset: Dataset[Any],
    folds: np.ndarray,
    fold: int,
    config: TrainConfig,
    *,
    seed: int,
    device: torch.device | str | None = None,
) -> TrainResult:
    """Train ``model`` in place on the ``(x, target)`` items outside ``fold``.
    ``folds``: (N,) fold ids of ``dataset``'s items."""
    train_idx = np.flatnonzero(folds != fold)
    return train(
        model,
        Subset(dataset, [int(i) for i in train_idx]),
        config,
        seed=fold_seed(seed, fold),
        device=device,
    )


def heldout_proba(
    model: nn.Module,
    dataset: Dataset[Any],
    folds: np.ndarray,
    fold: int,
    *,
    device: torch.device | str | None = None,
    batch_size: int = 256,
) -> np.ndarray:
    """(n_fold, C) float64 softmax of ``model`` on the items of ``fold``, in position order."""
    pool = LoaderPool(dataset, batch_size=batch_size).subset(np.flatnonzero(folds == fold))
    return predict_proba(model, pool, device).numpy().astype(np.float64)


def assemble(folds: np.ndarray, parts: list[np.ndarray]) -> np.ndarray:
    """(N, C): the held-out block of fold k (``parts[k]``, rows in position order) put back
    at the positions of fold k."""
    n = len(folds)
    c = parts[0].shape[1]
    out = np.full((n, c), np.nan)
    for k, part in enumerate(parts):
        idx = np.flatnonzero(folds == k)
        if part.shape != (len(idx), c):
            raise ValueError(f"fold {k} holds {len(idx)} items, its predictions are {part.shape}")
        out[idx] = part
    return out


def crossfit_proba(
    make_model: Callable[[int], nn.Module],
    dataset: Dataset[Any],
    folds: np.ndarray,
    config: TrainConfig,
    *,
    seed: int,
    device: torch.device | str | None = None,
    batch_size: int = 256,
) -> np.ndarray:
    """(N, C) float64 held-out probabilities of every item, all folds in this process.

    ``make_model(k)`` gives fold k's starting model (fresh, or last cycle's fold model k to
    fine-tune). The worker runs the same steps as one task per fold
    (``worker/pipeline/crossfit.py``)."""
    parts = []
    for k in range(int(folds.max()) + 1):
        model = make_model(k)
        train_fold(model, dataset, folds, k, config, seed=seed, device=device)
        parts.append(heldout_proba(model, dataset, folds, k, device=device, batch_size=batch_size))
    return assemble(folds, parts)
