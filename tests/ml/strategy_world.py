"""A tiny trained world shared by the strategy tests: MLP with dropout, pool, labelled set."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from worker.ml.data import ArrayDataset, TensorPool, one_hot
from worker.ml.ensemble import ensemble_size, train_ensemble
from worker.ml.models import Classifier
from worker.ml.networks import build_network, objective_for
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
    "discriminative": {"mini_queries": 3, "max_epochs": 5},
    "emoc": {"reference": 40},
    "vaal": {"epochs": 2, "width": 2, "latent_dim": 4, "batch_size": 16},
    "bgadl": {"mc_samples": 5},
}


@dataclass
class World:
    model: Classifier  # an EnsembleModel for ensemble strategies
    pool: TensorPool
    labelled: TensorPool
    labelled_targets: np.ndarray

    def ctx(self, seed: int = 0, pool: TensorPool | None = None, offset: int = 0) -> ScoringContext:
        return ScoringContext(
            model=self.model,
            pool=pool if pool is not None else self.pool,
            labelled=self.labelled,
            device=torch.device("cpu"),
            seed=seed,
            batch_size=BATCH,
            offset=offset,
            labelled_targets=self.labelled_targets,
        )


def make_world(
    strategy: Strategy | None = None,
    n: int = POOL_N,
    seed: int = 0,
    members: int | None = None,
    like: Strategy | None = None,
) -> World:
    """Train a small MLP for 3 epochs on 12 labelled points (running the strategy's callback).

    The network is the one ``like`` (default: ``strategy``) trains: an ensemble of
    ``members`` MLPs (default: what it asks for) when > 0; for learning loss, a small CNN with
    its loss module on 1x16x16 inputs, trained with its objective."""
    shaper = like if like is not None else strategy
    needs_taps = getattr(shaper, "build_network", None) is not None
    g = torch.Generator().manual_seed(seed)
    dim = 256 if needs_taps else DIM
    centers = torch.randn(NUM_CLASSES, dim, generator=g) * 2
    y_pool = torch.arange(n) % NUM_CLASSES
    x_pool = centers[y_pool] + torch.randn(n, dim, generator=g)
    y_lab = np.arange(12) % NUM_CLASSES
    x_lab_t = centers[torch.from_numpy(y_lab)] + torch.randn(12, dim, generator=g)
    if needs_taps:
        x_pool, x_lab_t = x_pool.view(n, 1, 16, 16), x_lab_t.view(12, 1, 16, 16)
        arch = {"name": "small_cnn", "input_shape": [1, 16, 16], "hparams": {}}
    else:
        arch = {
            "name": "mlp",
            "input_shape": [DIM],
            "hparams": {"hidden_sizes": [16], "dropout": 0.5},
        }
    x_lab = x_lab_t.numpy()
    spec = ModelSpec.from_dict({**arch, "num_classes": NUM_CLASSES})
    pool = TensorPool(x_pool, BATCH)
    dataset = ArrayDataset(x_lab, one_hot(y_lab, NUM_CLASSES))
    config = TrainConfig(epochs=3, batch_size=4, lr=0.02)
    m = ensemble_size(shaper) if members is None else members
    if m:
        ensemble, _ = train_ensemble(spec, dataset, config, seed=seed, members=m)
        labelled = TensorPool(torch.from_numpy(x_lab), BATCH)
        return World(_as_classifier(ensemble), pool, labelled, np.asarray(dataset.targets))
    model = build_network(shaper, spec, seed)
    callback = strategy.epoch_callback(pool) if strategy is not None else None
    objective = objective_for(shaper, config)
    train(model, dataset, config, seed=seed, epoch_callback=callback, objective=objective)
    labelled = TensorPool(torch.from_numpy(x_lab), BATCH)
    return World(_as_classifier(model), pool, labelled, np.asarray(dataset.targets))


def _as_classifier(model: nn.Module) -> Classifier:
    # ScoringContext.model is typed Classifier; ensemble and learning-loss strategies check
    # for the network they need.
    return model  # type: ignore[return-value]
