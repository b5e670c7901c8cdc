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

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from worker.ml.data import make_loader
from worker.ml.device import resolve_device
from worker.ml.spec import ARCHITECTURE_KEYS

EpochCallback = Callable[[int, nn.Module], None]


@dataclass(frozen=True)
class TrainConfig:
    """Training knobs, read from ``ModelSpec.hparams``.

    ``schedule``: ``constant``; ``cosine`` (anneal to 0 over ``epochs``); ``step`` (multiply the
    learning rate by ``gamma`` every ``step_size`` epochs).
    ``class_weighted_below``: while the labelled set has fewer items than this, weight the loss
    per class (``class_weights``); 0 turns weighting off.
    """

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "constant"
    step_size: int = 10
    gamma: float = 0.1
    class_weighted_below: int = 0
    # Epochs when training continues from a checkpoint (label-cleaning refreshes);
    # 0 = a quarter of ``epochs``, at least one.
    finetune_epochs: int = 0

    OPTIMIZERS: ClassVar[tuple[str, ...]] = ("adam", "sgd")
    SCHEDULES: ClassVar[tuple[str, ...]] = ("constant", "cosine", "step")

    def __post_init__(self) -> None:
        _check_int("epochs", self.epochs, 1)
        _check_int("batch_size", self.batch_size, 1)
        _check_int("step_size", self.step_size, 1)
        _check_int("class_weighted_below", self.class_weighted_below, 0)
        _check_int("finetune_epochs", self.finetune_epochs, 0)
        _check_float("lr", self.lr, lo=0.0, lo_open=True)
        _check_float("momentum", self.momentum, lo=0.0, hi=1.0)
        _check_float("weight_decay", self.weight_decay, lo=0.0)
        _check_float("gamma", self.gamma, lo=0.0, hi=1.0, lo_open=True)
        if self.optimizer not in self.OPTIMIZERS:
            raise ValueError(
                f"optimizer must be one of {list(self.OPTIMIZERS)}, got {self.optimizer!r}"
            )
        if self.schedule not in self.SCHEDULES:
            raise ValueError(
                f"schedule must be one of {list(self.SCHEDULES)}, got {self.schedule!r}"
            )

    @classmethod
    def from_hparams(cls, hparams: Mapping[str, Any]) -> TrainConfig:
        """Read the training keys of ``hparams``; architecture keys are skipped.

        Any other unknown key, or a bad value, raises ``ValueError``.
        """
        names = {f.name for f in fields(cls)}
        unknown = set(hparams) - names - ARCHITECTURE_KEYS
        if unknown:
            raise ValueError(
                f"unknown hparams {sorted(unknown)}; training keys are {sorted(names)}, "
                f"architecture keys are {sorted(ARCHITECTURE_KEYS)}"
            )
        values = {k: v for k, v in hparams.items() if k in names}
        # JSON has no int/float distinction for whole numbers; accept 1 where a float is wanted.
        for f in fields(cls):
            if f.type in ("float", float) and _is_int(values.get(f.name)):
                values[f.name] = float(values[f.name])
        return cls(**values)

    def for_finetuning(self) -> TrainConfig:
        """The same config with ``epochs`` set for continuing from a checkpoint."""
        epochs = self.finetune_epochs or max(1, self.epochs // 4)
        return replace(self, epochs=epochs)

    def to_hparams(self) -> dict[str, Any]:
        """The config as hparams keys."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class TrainResult:
    """``losses[e]`` is the mean training loss of epoch ``e``; ``seconds`` is wall time."""

    epochs: int
    losses: list[float]
    seconds: float


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
) -> TrainResult:
    """Train ``model`` in place on ``(x, target)`` items; returns per-epoch mean losses.

    ``epoch_callback(epoch, model)`` runs after each epoch (``epoch`` counts from 0); the model
    is put back in train mode afterwards, so the callback may switch it to eval freely.
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
    fork_devices = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)
        model.train()
        for epoch in range(config.epochs):
            total, count = 0.0, 0
            for x, target in loader:
                x = x.to(dev, non_blocking=True)
                target = target.to(dev, dtype=torch.float32, non_blocking=True)
                loss = soft_cross_entropy(model(x), target, weights)
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
    if not all(math.isfinite(v) for v in losses):
        raise FloatingPointError(f"training diverged: epoch losses {losses}")
    return TrainResult(config.epochs, losses, time.perf_counter() - start)


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


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_int(name: str, v: Any, lo: int) -> None:
    if not _is_int(v) or v < lo:
        raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")


def _check_float(
    name: str,
    v: Any,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
) -> None:
    ok = isinstance(v, float | int) and not isinstance(v, bool) and math.isfinite(v)
    if ok and lo is not None:
        ok = v > lo if lo_open else v >= lo
    if ok and hi is not None:
        ok = v <= hi
    if not ok:
        bounds = f"{'(' if lo_open else '['}{lo}, {hi if hi is not None else 'inf'}]"
        raise ValueError(f"{name} must be a number in {bounds}, got {v!r}")
