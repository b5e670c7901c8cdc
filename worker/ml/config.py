"""Training settings, read from a model spec's ``hparams``: validated without torch, so the API
refuses a bad value when a project or cycle is created (422 naming the key) with the very code
the worker trains by.

Caps keep one engineer's request from holding a worker for days (``epochs: 10**7``) or
allocating more than a host has (``hidden_sizes: [10**9]``); raise them here, deliberately.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar

# Keys of ``hparams`` that shape the network rather than its training; TrainConfig ignores them.
ARCHITECTURE_KEYS: frozenset[str] = frozenset(
    {"dropout", "hidden_sizes", "backbone", "frozen", "init", "pretraining"}
)
MAX_EPOCHS = 1_000
MAX_BATCH_SIZE = 8_192
MAX_HIDDEN_WIDTH = 16_384
MAX_HIDDEN_LAYERS = 8


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
        _check_int("epochs", self.epochs, 1, MAX_EPOCHS)
        _check_int("batch_size", self.batch_size, 1, MAX_BATCH_SIZE)
        _check_int("step_size", self.step_size, 1)
        _check_int("class_weighted_below", self.class_weighted_below, 0)
        _check_int("finetune_epochs", self.finetune_epochs, 0, MAX_EPOCHS)
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


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_int(name: str, v: Any, lo: int, hi: int | None = None) -> None:
    if not _is_int(v) or v < lo or (hi is not None and v > hi):
        upto = f" and <= {hi}" if hi is not None else ""
        raise ValueError(f"{name} must be an int >= {lo}{upto}, got {v!r}")


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
