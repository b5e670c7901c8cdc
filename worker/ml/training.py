"""Seeded supervised training with soft targets.

Items of the training Dataset are ``(x, target)`` with ``target`` a float probability vector
(C,) — crowd vote distributions as they are, hard labels as one-hot rows. The loss is the
soft-target cross-entropy ``-sum_c w_c t_c log softmax(z)_c`` averaged over the batch, with
``w`` all ones unless class weighting is on (see ``class_weights``).

Determinism: the initial weights come from ``build_model(spec, seed)``; shuffling uses a
loader generator and dropout the global RNG, which is forked and seeded with ``seed`` for the
duration of ``train`` and restored afterwards. Same seed + same data gives identical weights on
the CPU; on CUDA some kernels are not bitwise deterministic.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from worker.ml.config import TrainConfig
from worker.ml.data import make_loader
from worker.ml.device import resolve_device

__all__ = [
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "TrainingPaused",
    "class_weights",
    "soft_cross_entropy",
    "train",
]

EpochCallback = Callable[[int, nn.Module], None]
# Asked after each epoch but the last, with the epoch just done: True = stop here, resumably.
PauseCheck = Callable[[int], bool]
# (model, x, target, class weights or None, epoch) -> the batch loss to minimise.
Objective = Callable[[nn.Module, Tensor, Tensor, Tensor | None, int], Tensor]


@dataclass
class TrainResult:
    """``losses[e]`` is the mean training loss of epoch ``e``; ``seconds`` is wall time."""

    epochs: int
    losses: list[float]
    seconds: float


@dataclass
class TrainState:
    """Everything ``train`` needs to go on after ``epochs_done`` epochs as if it had never
    stopped: weights, optimizer and schedule, the shuffling generator and the global RNG that
    dropout draws from. Resuming from it gives the same weights, bit for bit, on the CPU."""

    epochs_done: int
    losses: list[float]
    seconds: float
    model: dict[str, Any]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    loader_rng: Tensor
    global_rng: Tensor
    cuda_rng: Tensor | None = None

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        torch.save(self.__dict__, buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> TrainState:
        return cls(**torch.load(io.BytesIO(data), map_location="cpu", weights_only=True))


class TrainingPaused(Exception):
    """``train`` stopped after an epoch because ``pause`` said so; ``state`` resumes it."""

    def __init__(self, state: TrainState) -> None:
        super().__init__(f"paused after epoch {state.epochs_done}")
        self.state = state


def class_weights(targets: Tensor) -> Tensor:
    """(N, C) soft targets -> (C,) per-class loss weights.

    ``m_c`` is the target mass of class c. Present classes get ``N / (K * m_c)`` (K = number of
    classes with mass), so rare classes weigh more while the total weighted mass stays N;
    absent classes get 0 (they contribute no loss either way).
    """
    mass = targets.to(torch.float64).sum(dim=0)
    present = mass > 0
    k = int(present.sum())
    weights = torch.zeros_like(mass)
    if k:
        weights[present] = targets.shape[0] / (k * mass[present])
    return weights.to(torch.float32)


def soft_cross_entropy(logits: Tensor, targets: Tensor, weights: Tensor | None = None) -> Tensor:
    """Mean over the batch of ``-sum_c w_c t_c log softmax(logits)_c``. (B, C), (B, C) -> ()."""
    log_p = F.log_softmax(logits, dim=1)
    per_class = targets * log_p
    if weights is not None:
        per_class = per_class * weights
    return -per_class.sum(dim=1).mean()


def dataset_targets(dataset: Dataset[Any]) -> Tensor:
    """(N, C) targets of a training Dataset.

    Uses a ``targets`` attribute when the Dataset has one (no decoding); otherwise reads the
    items once.
    """
    attr = getattr(dataset, "targets", None)
    if attr is not None:
        return torch.as_tensor(np.asarray(attr), dtype=torch.float32)
    rows = [torch.as_tensor(dataset[i][1], dtype=torch.float32) for i in range(len(dataset))]  # type: ignore[arg-type]
    return torch.stack(rows)


def train(
    model: nn.Module,
    dataset: Dataset[Any],
    config: TrainConfig,
    *,
    seed: int,
    device: torch.device | str | None = None,
    epoch_callback: EpochCallback | None = None,
    pause: PauseCheck | None = None,
    resume: TrainState | None = None,
    objective: Objective | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``(x, target)`` items; returns per-epoch mean losses.

    ``epoch_callback(epoch, model)`` runs after each epoch (``epoch`` counts from 0); the model
    is put back in train mode afterwards, so the callback may switch it to eval freely.
    ``pause(epoch)`` runs after each epoch but the last; True raises ``TrainingPaused``, whose
    state, passed back as ``resume`` with the same model, data, config and seed, goes on from
    the next epoch.
    ``objective(model, x, target, weights, epoch)``: the batch loss, when it is more than the
    soft-target CE (learning loss adds its ranking loss); default the CE.
    """
    n = len(dataset)  # type: ignore[arg-type]
    if n == 0:
        raise ValueError("cannot train on an empty dataset")
    dev = resolve_device(device)
    model.to(dev)
    weights = None
    if n < config.class_weighted_below:
        weights = class_weights(dataset_targets(dataset)).to(dev)
    # BatchNorm cannot normalise a batch of one in train mode; drop such a trailing batch.
    drop_last = n > 1 and n % config.batch_size == 1
    loader = make_loader(dataset, config.batch_size, shuffle=True, seed=seed, drop_last=drop_last)
    optimizer = _make_optimizer(model, config)
    scheduler = _make_scheduler(optimizer, config)
    losses: list[float] = []
    start = time.perf_counter()
    first_epoch = 0
    fork_devices = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)
        if resume is not None:
            _restore(resume, model, optimizer, scheduler, loader.generator, dev)
            losses, first_epoch = list(resume.losses), resume.epochs_done
            start -= resume.seconds
        model.train()
        for epoch in range(first_epoch, config.epochs):
            total, count = 0.0, 0
            for x, target in loader:
                x = x.to(dev, non_blocking=True)
                target = target.to(dev, dtype=torch.float32, non_blocking=True)
                if objective is None:
                    loss = soft_cross_entropy(model(x), target, weights)
                else:
                    loss = objective(model, x, target, weights, epoch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(x)
                count += len(x)
            losses.append(total / max(count, 1))
            scheduler.step()
            if epoch_callback is not None:
                epoch_callback(epoch, model)
                model.train()
            if pause is not None and epoch + 1 < config.epochs and pause(epoch):
                raise TrainingPaused(
                    _capture(
                        epoch + 1,
                        losses,
                        time.perf_counter() - start,
                        model,
                        optimizer,
                        scheduler,
                        loader.generator,
                        dev,
                    )
                )
    if not all(math.isfinite(v) for v in losses):
        raise FloatingPointError(f"training diverged: epoch losses {losses}")
    return TrainResult(config.epochs, losses, time.perf_counter() - start)


def _capture(
    epochs_done: int,
    losses: list[float],
    seconds: float,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator | None,
    dev: torch.device,
) -> TrainState:
    assert generator is not None  # a shuffled loader always has one (make_loader)
    return TrainState(
        epochs_done=epochs_done,
        losses=list(losses),
        seconds=seconds,
        model={k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        optimizer=optimizer.state_dict(),
        scheduler=scheduler.state_dict(),
        loader_rng=generator.get_state(),
        global_rng=torch.get_rng_state(),
        cuda_rng=torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None,
    )


def _restore(
    state: TrainState,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator | None,
    dev: torch.device,
) -> None:
    assert generator is not None
    model.load_state_dict(state.model)
    optimizer.load_state_dict(state.optimizer)
    scheduler.load_state_dict(state.scheduler)
    generator.set_state(state.loader_rng)
    torch.set_rng_state(state.global_rng)
    if state.cuda_rng is not None and dev.type == "cuda":
        torch.cuda.set_rng_state(state.cuda_rng, dev)


def _make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


def _make_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig
) -> torch.optim.lr_scheduler.LRScheduler:
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    if config.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=config.step_size, gamma=config.gamma
        )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _epoch: 1.0)
