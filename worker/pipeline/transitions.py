"""Cycle state changes, each its own short transaction, each a compare-and-set on the state.

A redelivered task, a cancel from the API, and a worker that finishes late all race on the
same row; guarding every write with "only if the state is still what I expect" means exactly
one of them wins and the others stop without side effects.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from app.core.db import unit_of_work, utcnow
from app.core.enums import CycleState, LeaseOutcome, QueueState
from app.cycles.models import Cycle
from app.queue.models import Lease, QueueEntry
from worker.pipeline.snapshot import CycleInputs, load_inputs

RUNNING = (CycleState.created, CycleState.training, CycleState.scoring)


def claim(factory: sessionmaker[Session], cycle_id: int) -> CycleInputs | None:
    """Move the cycle to ``training`` and snapshot its inputs; None if it needs no work."""
    with unit_of_work(factory) as db:
        cycle = db.scalar(select(Cycle).where(Cycle.id == cycle_id).with_for_update())
        if cycle is None or cycle.state not in RUNNING:
            return None
        cycle.state = CycleState.training
        cycle.attempts += 1
        cycle.started_at = utcnow()
        cycle.error = None
        inputs = load_inputs(db, cycle)
        cycle.labelled_set_hash = inputs.labelled_set_hash
        return inputs


def advance(
    factory: sessionmaker[Session],
    cycle_id: int,
    *,
    expect: CycleState,
    to: CycleState,
    **fields: Any,
) -> bool:
    with unit_of_work(factory) as db:
        result = db.execute(
            update(Cycle)
            .where(Cycle.id == cycle_id, Cycle.state == expect)
            .values(state=to, **fields)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


def open_queue(
    factory: sessionmaker[Session],
    inputs: CycleInputs,
    item_ids: Sequence[int],
    scores: Sequence[float | None],
    **fields: Any,
) -> bool:
    """Atomically: the cycle goes ``scoring`` → ``labeling`` and its queue is written.

    Earlier cycles still in ``labeling`` are completed and their open entries closed, so
    annotators move on to the new batch.
    """
    with unit_of_work(factory) as db:
        result = db.execute(
            update(Cycle)
            .where(Cycle.id == inputs.cycle_id, Cycle.state == CycleState.scoring)
            .values(state=CycleState.labeling, **fields)
        )
        if not result.rowcount:  # type: ignore[attr-defined]
            return False
        _close_earlier_cycles(db, inputs)
        # A retried task may find rows from its earlier attempt (same cycle): replace them.
        db.query(QueueEntry).filter(QueueEntry.cycle_id == inputs.cycle_id).delete()
        db.add_all(
            QueueEntry(
                project_id=inputs.project_id,
                cycle_id=inputs.cycle_id,
                item_id=item_id,
                rank=rank,
                score=score,
                labels_wanted=inputs.labels_per_item,
                state=QueueState.open,
            )
            for rank, (item_id, score) in enumerate(zip(item_ids, scores, strict=True))
        )
        return True


def _close_earlier_cycles(db: Session, inputs: CycleInputs) -> None:
    now = utcnow()
    earlier = db.scalars(
        select(Cycle.id).where(
            Cycle.project_id == inputs.project_id,
            Cycle.id != inputs.cycle_id,
            Cycle.state == CycleState.labeling,
        )
    ).all()
    if not earlier:
        return
    db.execute(
        update(Cycle)
        .where(Cycle.id.in_(earlier))
        .values(state=CycleState.completed, finished_at=now)
    )
    open_entries = select(QueueEntry.id).where(
        QueueEntry.cycle_id.in_(earlier), QueueEntry.state == QueueState.open
    )
    db.execute(
        update(Lease)
        .where(Lease.queue_entry_id.in_(open_entries), Lease.released_at.is_(None))
        .values(released_at=now, outcome=LeaseOutcome.cancelled)
    )
    db.execute(
        update(QueueEntry)
        .where(QueueEntry.cycle_id.in_(earlier), QueueEntry.state == QueueState.open)
        .values(state=QueueState.cancelled)
    )


def fail(factory: sessionmaker[Session], cycle_id: int, error: str) -> None:
    with unit_of_work(factory) as db:
        db.execute(
            update(Cycle)
            .where(Cycle.id == cycle_id, Cycle.state.in_(RUNNING))
            .values(state=CycleState.failed, error=error[-4000:], finished_at=utcnow())
        )
