"""Queries for the annotation queue and its leases."""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from sqlalchemy import exists, func, or_, select, update
from sqlalchemy.orm import Session

from app.annotations.models import Annotation
from app.core.enums import CycleState, LeaseOutcome, QueueState
from app.cycles.models import Cycle
from app.queue.models import Lease, QueueEntry


def expire_stale(db: Session, now: datetime) -> int:
    """Close leases past their expiry and give their slots back; returns how many.

    Rows are claimed with SKIP LOCKED in id order, so concurrent sweeps never wait on or
    deadlock with each other, and a lease being submitted (locked) is left alone.
    """
    stale = db.execute(
        select(Lease.id, Lease.queue_entry_id)
        .where(Lease.released_at.is_(None), Lease.expires_at <= now)
        .order_by(Lease.id)
        .with_for_update(skip_locked=True)
    ).all()
    if not stale:
        return 0
    db.execute(
        update(Lease)
        .where(Lease.id.in_([row.id for row in stale]))
        .values(released_at=now, outcome=LeaseOutcome.expired)
    )
    for entry_id, n in sorted(Counter(row.queue_entry_id for row in stale).items()):
        db.execute(
            update(QueueEntry)
            .where(QueueEntry.id == entry_id)
            .values(leases_open=QueueEntry.leases_open - n)
        )
    return len(stale)


def held_leases(
    db: Session, project_id: int, annotator_id: int, now: datetime, limit: int
) -> list[Lease]:
    """The annotator's live leases in this project, oldest first."""
    return list(
        db.scalars(
            select(Lease)
            .where(
                Lease.project_id == project_id,
                Lease.annotator_id == annotator_id,
                Lease.released_at.is_(None),
                Lease.expires_at > now,
            )
            .order_by(Lease.id)
            .limit(limit)
        )
    )


def open_leases(db: Session, project_id: int) -> int:
    stmt = select(func.count(Lease.id)).where(
        Lease.project_id == project_id, Lease.released_at.is_(None)
    )
    return int(db.scalar(stmt) or 0)


def pick_entry(db: Session, project_id: int, annotator_id: int) -> QueueEntry | None:
    """The best-ranked entry with a free slot that this annotator has neither labelled nor
    skipped, locked (Postgres: rows other requests hold are skipped, not waited for)."""
    labelled = exists().where(
        Annotation.item_id == QueueEntry.item_id,
        Annotation.annotator_id == annotator_id,
        Annotation.retracted_at.is_(None),
    )
    seen = exists().where(
        Lease.queue_entry_id == QueueEntry.id,
        Lease.annotator_id == annotator_id,
        or_(Lease.released_at.is_(None), Lease.outcome == LeaseOutcome.skipped),
    )
    stmt = (
        select(QueueEntry)
        .join(Cycle, Cycle.id == QueueEntry.cycle_id)
        .where(
            QueueEntry.project_id == project_id,
            QueueEntry.state == QueueState.open,
            Cycle.state == CycleState.labeling,
            QueueEntry.labels_received + QueueEntry.leases_open < QueueEntry.labels_wanted,
            ~labelled,
            ~seen,
        )
        .order_by(QueueEntry.rank, QueueEntry.id)
        .limit(1)
        .with_for_update(skip_locked=True, of=QueueEntry)
    )
    return db.scalar(stmt)


def lease_for_update(db: Session, item_id: int, annotator_id: int) -> Lease | None:
    """The annotator's open lease on an item, locked against a concurrent sweep or skip."""
    return db.scalar(
        select(Lease)
        .where(
            Lease.item_id == item_id,
            Lease.annotator_id == annotator_id,
            Lease.released_at.is_(None),
        )
        .with_for_update()
    )


def last_lease(db: Session, item_id: int, annotator_id: int) -> Lease | None:
    return db.scalar(
        select(Lease)
        .where(Lease.item_id == item_id, Lease.annotator_id == annotator_id)
        .order_by(Lease.id.desc())
        .limit(1)
    )


def entry_for_update(db: Session, entry_id: int) -> QueueEntry:
    entry = db.scalar(select(QueueEntry).where(QueueEntry.id == entry_id).with_for_update())
    assert entry is not None
    return entry


def entry_of(db: Session, cycle_id: int, item_id: int) -> QueueEntry | None:
    return db.scalar(
        select(QueueEntry)
        .where(QueueEntry.cycle_id == cycle_id, QueueEntry.item_id == item_id)
        .with_for_update()
    )


def last_human_label(db: Session, project_id: int, annotator_id: int) -> Annotation | None:
    return db.scalar(
        select(Annotation)
        .where(
            Annotation.project_id == project_id,
            Annotation.annotator_id == annotator_id,
            Annotation.source == "human",
            Annotation.retracted_at.is_(None),
        )
        .order_by(Annotation.id.desc())
        .limit(1)
    )
