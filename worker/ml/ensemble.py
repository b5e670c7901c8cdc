"""Deep ensembles (Beluch et al., CVPR 2018): M networks of the project's architecture, each
initialised and trained from its own seed on the same labelled items, predicting together.

The cycle's model is ``EnsembleModel``: its ``forward`` returns ``log(mean_m softmax(z_m))``,
so ``softmax(forward(x))`` is the members' mean posterior and everything that reads a model
through ``predict_proba`` (``evaluate``, the cycle's test metrics) sees the ensemble's mean.
The acquisition scores (``strategies/qbc.py``) read the members one by one (``member_probs``).

Member ``k`` depends only on (cycle seed, k) and the training data, never on the other
members, so the worker trains them as separate tasks on any number of hosts
(``worker/pipeline/ensemble.py``) and ``train_ensemble`` here does the same in one process
(simulations, benchmarks): both give the same weights on the CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from worker.ml.evaluation import EPS
from worker.ml.models import Classifier, build_model
from worker.ml.networks import build_network
from worker.ml.spec import ModelSpec
from worker.ml.training import TrainConfig, TrainResult, train


class EnsembleModel(nn.Module):
    """M trained ``Classifier`` members; ``forward`` = log of the mean softmax (B, C)."""

    def __init__(self, members: Sequence[Classifier]) -> None:
        super().__init__()
        if len(members) < 1:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)
        self.num_classes = members[0].num_classes
        self.arch = f"ensemble of {len(members)} {members[0].arch}"

    def __len__(self) -> int:
        return len(self.members)

    def member_probs(self, x: Tensor) -> Tensor:
        """(B, *input_shape) -> (B, M, C) float64 softmax of each member."""
        return torch.stack(
            [torch.softmax(m(x).to(torch.float64), dim=1) for m in self.members], dim=1
        )

    def forward(self, x: Tensor) -> Tensor:
        """(B, *input_shape) -> (B, C) log mean posterior (float32, clamped at 1e-12)."""
        mean = self.member_probs(x).mean(dim=1)
        return mean.clamp_min(EPS).log().to(torch.float32)


def member_seed(seed: int, member: int) -> int:
    """The init and training seed of member ``member`` (independent streams per member)."""
    state = np.random.SeedSequence([seed, member, 0x454E53]).generate_state(1)[0]
    return int(state & 0x7FFFFFFF)


def train_member(
    spec: ModelSpec,
    dataset: Dataset[Any],
    config: TrainConfig,
    *,
    seed: int,
    member: int,
    device: torch.device | str | None = None,
) -> tuple[Classifier, TrainResult]:
    """Member ``member`` of the cycle with seed ``seed``: a fresh network trained on
    ``dataset``, both from ``member_seed(seed, member)``."""
    s = member_seed(seed, member)
    model = build_model(spec, seed=s)
    result = train(model, dataset, config, seed=s, device=device)
    return model, result


def train_ensemble(
    spec: ModelSpec,
    dataset: Dataset[Any],
    config: TrainConfig,
    *,
    seed: int,
    members: int,
    device: torch.device | str | None = None,
) -> tuple[EnsembleModel, list[TrainResult]]:
    """All ``members`` in this process, one after another (what the member tasks do)."""
    trained = [
        train_member(spec, dataset, config, seed=seed, member=k, device=device)
        for k in range(members)
    ]
    return EnsembleModel([m for m, _ in trained]), [r for _, r in trained]


def empty_ensemble(spec: ModelSpec, members: int) -> EnsembleModel:
    """An ensemble of the right shape to load a stored ensemble checkpoint into."""
    return EnsembleModel([build_model(spec, seed=k) for k in range(members)])


def ensemble_size(strategy: object) -> int:
    """M when the strategy scores with an ensemble (``members`` > 0 on an ensemble strategy),
    else 0: the cycle trains one model."""
    return int(getattr(strategy, "ensemble_members", 0) or 0)


def cycle_model(spec: ModelSpec, seed: int, strategy: object) -> nn.Module:
    """The untrained model a cycle of ``strategy`` stores: one network, or M for an ensemble
    (shape only: a checkpoint is loaded into it)."""
    m = ensemble_size(strategy)
    return empty_ensemble(spec, m) if m else build_network(strategy, spec, seed)
