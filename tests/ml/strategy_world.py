"""A tiny trained world shared by the strategy tests: MLP with dropout, pool, labelled set."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from worker.ml.data import ArrayDataset, TensorPool, one_hot
from worker.ml.ensemble import EnsembleModel, ensemble_size, train_ensemble
from worker.ml.models import Classifier, build_model
from worker.ml.spec import ModelSpec
from worker.ml.strategies import ScoringContext, Strategy
from worker.ml.training import TrainConfig, train

BATCH = 16
POOL_N = 70
NUM_CLASSES = 3
DIM = 6

# Keep the expensive strategies cheap in tests.
SMALL_PARAMS: dict[str, dict[str, object]] = {
    "bald": {"mc_samples": 5},
    "noise_stability": {"num_samples": 3, "zeta": 0.05},
    "ensemble_vote_entropy": {"members": 3},
    "ensemble_consensus_entropy": {"members": 3},
    "ensemble_mutual_information": {"members": 3},
}


@dataclass
class World:
    model: Classifier  # an EnsembleModel for ensemble strategies
    pool: TensorPool
    labelled: TensorPool

    def ctx(self, seed: int = 0, pool: TensorPool | None = None, offset: int = 0) -> ScoringContext:
        return ScoringContext(
            model=self.model,
            pool=pool if pool is not None else self.pool,
            labelled=self.labelled,
            device=torch.device("cpu"),
            seed=seed,
            batch_size=BATCH,
            offset=offset,
        )


def make_world(
    strategy: Strategy | None = None, n: int = POOL_N, seed: int = 0, members: int | None = None
) -> World:
    """Train a small MLP for 3 epochs on 12 labelled points (running the strategy's callback);
    an ensemble of ``members`` such MLPs (default: what the strategy asks for) when > 0."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(NUM_CLASSES, DIM, generator=g) * 2
    y_pool = torch.arange(n) % NUM_CLASSES
    x_pool = centers[y_pool] + torch.randn(n, DIM, generator=g)
    y_lab = np.arange(12) % NUM_CLASSES
    x_lab = (centers[torch.from_numpy(y_lab)] + torch.randn(12, DIM, generator=g)).numpy()
    spec = ModelSpec.from_dict(
        {
            "name": "mlp",
            "input_shape": [DIM],
            "num_classes": NUM_CLASSES,
            "hparams": {"hidden_sizes": [16], "dropout": 0.5},
        }
    )
    pool = TensorPool(x_pool, BATCH)
    dataset = ArrayDataset(x_lab, one_hot(y_lab, NUM_CLASSES))
    config = TrainConfig(epochs=3, batch_size=4, lr=0.02)
    m = ensemble_size(strategy) if members is None else members
    if m:
        ensemble, _ = train_ensemble(spec, dataset, config, seed=seed, members=m)
        return World(_as_classifier(ensemble), pool, TensorPool(torch.from_numpy(x_lab), BATCH))
    model = build_model(spec, seed=seed)
    callback = strategy.epoch_callback(pool) if strategy is not None else None
    train(model, dataset, config, seed=seed, epoch_callback=callback)
    return World(model, pool, TensorPool(torch.from_numpy(x_lab), BATCH))


def _as_classifier(model: EnsembleModel) -> Classifier:
    # ScoringContext.model is typed Classifier; the ensemble strategies check for the ensemble.
    return model  # type: ignore[return-value]
