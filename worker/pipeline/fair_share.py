"""Taking turns on the ``train`` workers: a long training gives its worker to another
project's waiting cycle, then carries on where it stopped.

A cycle runs on one worker process until it is done, so one project's 1,000-epoch cycle
would hold a single worker for hours while every other project's cycle waits behind it.
Instead, after each epoch past its slice (``ANNOLOOP_CYCLE_SLICE_S``), training asks whether
another project has a cycle that has waited for a worker (state ``created``) for
``ANNOLOOP_CYCLE_TURN_WAIT_S`` (5 s). If so it pauses: its full training state
(``worker.ml.training.TrainState``) goes into a blob, the cycle goes back to ``created``
with ``metrics["paused"]`` naming that blob and the cycles it gives way to, and its run
task is sent again. Brokers do not promise that
this task comes after the waiting ones (the embedded broker puts a message it handed out and
took back at the end; a lost send is re-sent by the sweep later), so while one of those is
still ``created`` the paused cycle's task puts itself off a second at a time (for at most
``max(GIVE_WAY_S, slice)``); a Celery worker holds such a message aside and takes the next.
The run after that picks the state up and finishes with the same weights it would have had
without the pause (same labelled set, same seed). Two long cycles thus alternate slice by
slice; a lone one never pauses.

Cleaning cycles need none of this: their fold models are tasks of their own, between which
other cycles' tasks already run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.core.blobs import BlobStore
from app.core.db import utcnow
from app.core.enums import CycleState
from app.core.task_names import RUN_CYCLE
from app.core.tasks import TaskSender
from app.cycles.models import Cycle
from worker.ml.training import TrainState
from worker.pipeline import transitions
from worker.pipeline.snapshot import CycleInputs

log = logging.getLogger(__name__)

# How often (at most) the database is asked, once the slice is used up.
CHECK_INTERVAL_S = 1.0
# How long a paused cycle waits at most for the cycles it gave way to, and how often it looks.
GIVE_WAY_S = 60.0
DEFER_S = 1.0
PAUSED = "paused"


class FairShare:
    """``pause`` for ``train``: True once this run has used ``slice_s`` and another project's
    cycle has waited ``waited_s`` or more for a worker. ``slice_s`` 0: never."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        project_id: int,
        slice_s: float,
        *,
        waited_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.factory = factory
        self.project_id = project_id
        self.slice_s = slice_s
        self.waited_s = waited_s
        self._clock = clock
        self._start = clock()
        self._next_check = float("-inf")
        self.waiting: list[int] = []  # the cycles found waiting when it said True

    def __call__(self, epoch: int) -> bool:
        if not self.slice_s or self._clock() - self._start < self.slice_s:
            return False
        if self._clock() < self._next_check:
            return False
        self._next_check = self._clock() + CHECK_INTERVAL_S
        self.waiting = self.waiting_cycles()
        return bool(self.waiting)

    def waiting_cycles(self) -> list[int]:
        before = utcnow() - timedelta(seconds=self.waited_s)
        with self.factory() as db:
            return list(
                db.scalars(
                    select(Cycle.id)
                    .where(
                        Cycle.state == CycleState.created,
                        Cycle.project_id != self.project_id,
                        Cycle.created_at <= before,
                    )
                    .order_by(Cycle.created_at, Cycle.id)
                    .limit(100)
                )
            )


@dataclass(frozen=True)
class Paused:
    """What ``metrics["paused"]`` records: the state blob and what it was trained on."""

    state_sha256: str
    epochs_done: int
    labelled_set_hash: str
    run_s: float  # seconds the cycle has run before this attempt, for its time limit
    pauses: int
    behind: list[int]  # the cycles it gave way to
    until: float  # Unix time after which it stops giving way to them

    @classmethod
    def from_metrics(cls, metrics: dict[str, Any] | None) -> Paused | None:
        record = (metrics or {}).get(PAUSED)
        return cls(**record) if record else None


def pause(
    factory: sessionmaker[Session],
    blobs: BlobStore,
    sender: TaskSender,
    inputs: CycleInputs,
    state: TrainState,
    run_s: float,
    pauses: int,
    share: FairShare,
) -> bool:
    """Store ``state``, put the cycle back to ``created`` and send its run task again (after
    the commit). False if the cycle was cancelled meanwhile (the state is then unused)."""
    record = Paused(
        state_sha256=blobs.put(state.to_bytes()),
        epochs_done=state.epochs_done,
        labelled_set_hash=inputs.labelled_set_hash,
        run_s=run_s,
        pauses=pauses,
        behind=share.waiting,
        until=utcnow().timestamp() + max(GIVE_WAY_S, share.slice_s),
    )

    def record_pause(cycle: Cycle) -> list[transitions.Task]:
        cycle.metrics = {**(cycle.metrics or {}), PAUSED: record.__dict__}
        # A new message: it may claim the cycle while it waits, never take a run over.
        return [RUN_CYCLE.message([cycle.id])]

    done = transitions.change_locked(
        factory,
        inputs.cycle_id,
        sender,
        record_pause,
        expect=CycleState.training,
        to=CycleState.created,
    )
    if done:
        log.info(
            "cycle %s paused after epoch %d for another project's cycle",
            inputs.cycle_id,
            state.epochs_done,
        )
    return done


def resumable(
    factory: sessionmaker[Session], blobs: BlobStore, inputs: CycleInputs
) -> tuple[Paused | None, TrainState | None]:
    """The pause this cycle left, and its training state if it still applies: trained on the
    same labelled set (labels that came in meanwhile mean training starts over)."""
    with factory() as db:
        metrics = db.scalar(select(Cycle.metrics).where(Cycle.id == inputs.cycle_id))
    record = Paused.from_metrics(metrics)
    if record is None:
        return None, None
    if record.labelled_set_hash != inputs.labelled_set_hash:
        log.info("cycle %s: labels changed while paused; training starts over", inputs.cycle_id)
        return record, None
    return record, TrainState.from_bytes(blobs.get(record.state_sha256))


def gives_way(factory: sessionmaker[Session], cycle_id: int) -> bool:
    """True while this paused cycle should leave the worker to a cycle it paused for: one of
    them is still ``created`` and the pause is recent enough."""
    with factory() as db:
        cycle = db.get(Cycle, cycle_id)
        if cycle is None or cycle.state is not CycleState.created:
            return False
        record = Paused.from_metrics(cycle.metrics)
        if record is None or not record.behind or utcnow().timestamp() >= record.until:
            return False
        still = db.scalar(
            select(Cycle.id)
            .where(Cycle.id.in_(record.behind), Cycle.state == CycleState.created)
            .limit(1)
        )
    return still is not None


def defer(cycle_id: int) -> None:
    """Send this cycle's run task again, due in ``DEFER_S``: the worker keeps it aside and
    meanwhile takes the next task from the queue."""
    from worker.celery_app import celery_app

    celery_app.send_task(RUN_CYCLE.name, args=[cycle_id], queue=RUN_CYCLE.queue, countdown=DEFER_S)
