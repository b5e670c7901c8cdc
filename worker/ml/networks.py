"""Which network a cycle trains, and with which loss, for a given strategy.

Most strategies score the project's plain network trained with the soft-target CE. A strategy
may ask for more: ``build_network(spec, seed)`` (learning loss: the network plus its
loss-prediction module), ``training_objective(config)`` (its ranking loss) and
``augmentation(seed)`` (BGADL: generated samples added to training); ensembles train M
networks (``ensemble.py``). The worker and the simulator both ask here, so they train alike.
"""

from __future__ import annotations

import torch
from torch import nn

from worker.ml.bgadl import Augmenter
from worker.ml.models import build_model
from worker.ml.spec import ModelSpec
from worker.ml.training import Objective, TrainConfig


def build_network(strategy: object, spec: ModelSpec, seed: int) -> nn.Module:
    builder = getattr(strategy, "build_network", None)
    return build_model(spec, seed=seed) if builder is None else builder(spec, seed)


def objective_for(strategy: object, config: TrainConfig) -> Objective | None:
    make = getattr(strategy, "training_objective", None)
    return None if make is None else make(config)


def augmentation_for(
    strategy: object, seed: int, device: torch.device | None = None
) -> Augmenter | None:
    """The generator of extra training samples a strategy trains with (BGADL), or None."""
    make = getattr(strategy, "augmentation", None)
    return None if make is None else make(seed, device)
