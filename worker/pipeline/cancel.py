"""Stopping a cycle's work between batches: once it is cancelled (or a later attempt has taken
it over), and once it runs past its time limit (``ANNOLOOP_CYCLE_TIME_LIMIT_S``).

Every training and scoring loop of a pipeline reads its items through a dataset: epochs,
evaluation, each strategy's pass over the pool, fold models, shards. ``CycleWatch.guard`` wraps
such a dataset so that reading an item runs the watch, which looks at the cycle's row (one
primary-key query) at most once per ``interval_s``. One hook thus covers every loop, the
ML code (``worker/ml``) stays free of database knowledge, and a worker taken by a cancelled
cycle is free again within about a second plus one batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from torch.utils.data import Dataset

from app.core.db import utcnow
from app.cycles.models import Cycle
from app.cycles.states import RUNNING
from worker.pipeline.runtime import Runtime

CHECK_INTERVAL_S = 1.0


class CycleStopped(Exception):
    """The cycle left its running states, or another attempt runs it: stop, fail nothing."""


class CycleTimeLimitExceeded(RuntimeError):
    """The cycle ran longer than its time limit; the pipeline marks it failed with this."""


class CycleWatch:
    """Raises ``CycleStopped`` or ``CycleTimeLimitExceeded`` when called, if the cycle should
    stop; cheap to call often (a clock read until ``interval_s`` has passed).

    ``attempt``: the attempt this process works for (shard and fold tasks carry it); None =
    the one the first check finds (the run task, just after its claim). ``phase`` names the
    work in the outcome ("cancelled while training").
    """

    def __init__(
        self,
        factory: sessionmaker[Session],
        cycle_id: int,
        limit_s: float,
        *,
        attempt: int | None = None,
        phase: str = "training",
        interval_s: float = CHECK_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.factory = factory
        self.cycle_id = cycle_id
        self.limit_s = limit_s
        self.attempt = attempt
        self.phase = phase
        self.interval_s = interval_s
        self._clock = clock
        self._next_check = float("-inf")

    def __call__(self) -> None:
        if self._clock() >= self._next_check:
            self.check_now()

    def check_now(self) -> None:
        self._next_check = self._clock() + self.interval_s
        with self.factory() as db:
            row = db.execute(
                select(Cycle.state, Cycle.attempts, Cycle.started_at).where(
                    Cycle.id == self.cycle_id
                )
            ).one_or_none()
        if row is None:
            raise CycleStopped(f"deleted while {self.phase}")
        state, attempts, started_at = row
        if self.attempt is None:
            self.attempt = attempts
        if state not in RUNNING:
            raise CycleStopped(f"{state.value} while {self.phase}")
        if attempts != self.attempt:
            raise CycleStopped(f"stale: attempt {attempts} took over while {self.phase}")
        if started_at is not None and _seconds_since(started_at) > self.limit_s:
            raise CycleTimeLimitExceeded(
                f"cycle {self.cycle_id} ran past its time limit of {self.limit_s:g} s while "
                f"{self.phase} (ANNOLOOP_CYCLE_TIME_LIMIT_S); lower epochs or candidates, "
                "or raise the limit"
            )

    def guard(self, dataset: Dataset[Any]) -> Dataset[Any]:
        """``dataset`` whose every item read runs this watch first."""
        return _Guarded(dataset, self)


def watch(
    rt: Runtime, cycle_id: int, *, attempt: int | None = None, phase: str, spent_s: float = 0.0
) -> CycleWatch:
    """A watch with this deployment's time limit, less ``spent_s`` the cycle ran before it
    paused for another project's cycle (``worker.pipeline.fair_share``)."""
    return CycleWatch(
        rt.factory,
        cycle_id,
        rt.settings.cycle_time_limit_s - spent_s,
        attempt=attempt,
        phase=phase,
    )


class _Guarded(Dataset[Any]):
    def __init__(self, dataset: Dataset[Any], check: Callable[[], None]) -> None:
        self.dataset = dataset
        self.check = check
        # Training weights classes from this attribute without decoding every item.
        self.targets = getattr(dataset, "targets", None)
        if hasattr(dataset, "check"):  # a dataset that fills a cache checks while it fills
            dataset.check = check

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        self.check()
        return self.dataset[index]

    def __getitems__(self, indices: list[int]) -> Any:
        """A whole batch: one check, then the dataset's own batched read if it has one."""
        self.check()
        batched = getattr(self.dataset, "__getitems__", None)
        if batched is not None:
            return batched(indices)
        return [self.dataset[i] for i in indices]


def _seconds_since(started_at: datetime) -> float:
    if started_at.tzinfo is None:  # SQLite hands back naive UTC
        started_at = started_at.replace(tzinfo=UTC)
    return (utcnow() - started_at).total_seconds()
