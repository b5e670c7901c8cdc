"""Queries for the annotation queue and its leases."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from sqlalchemy import Row, case, exists, func, insert, or_, select, update
from sqlalchemy.orm import Session

from app.annotations.models import Annotation
from app.core.enums import CycleState, LeaseOutcome, QueueState
from app.cycles.models import Cycle
from app.items.models import Item
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


# What an annotator is shown of a leased item (``ItemOut``), read as plain columns next to
# the lease or queue entry: the hot path builds its answer without loading ORM objects.
_ITEM = (
    Item.id.label("item_id"),
    Item.project_id,
    Item.split,
    Item.external_id,
    Item.blob_sha256,
    Item.media_type,
    Item.width,
    Item.height,
    Item.meta,
    Item.created_at.label("item_created_at"),
)


def held_leases(
    db: Session, project_id: int, annotator_id: int, now: datetime, limit: int
) -> list[Row[Any]]:
    """The annotator's live leases in this project, oldest first, with their items and
    cycles: ``id``, ``queue_entry_id``, ``created_at``, ``expires_at``, ``cycle_id``, item."""
    stmt = (
        select(
            Lease.id,
            Lease.queue_entry_id,
            Lease.created_at,
            Lease.expires_at,
            QueueEntry.cycle_id,
            *_ITEM,
        )
        .join(QueueEntry, QueueEntry.id == Lease.queue_entry_id)
        .join(Item, Item.id == Lease.item_id)
        .where(
            Lease.project_id == project_id,
            Lease.annotator_id == annotator_id,
            Lease.released_at.is_(None),
            Lease.expires_at > now,
        )
        .order_by(Lease.id)
        .limit(limit)
    )
    return list(db.execute(stmt).all())


def open_leases(db: Session, project_id: int) -> int:
    stmt = select(func.count(Lease.id)).where(
        Lease.project_id == project_id, Lease.released_at.is_(None)
    )
    return int(db.scalar(stmt) or 0)


def pick_entry(db: Session, project_id: int, annotator_id: int) -> Row[Any] | None:
    """The best-ranked entry with a free slot that this annotator has neither labelled nor
    skipped, locked (Postgres: rows other requests hold are skipped, not waited for), with
    its item: ``entry_id``, ``cycle_id``, item columns."""
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
    # A correlated EXISTS, not a join: with the cycle as the outer loop SQLite sorted every
    # open entry on each call instead of walking the index in (rank, id) order.
    labeling = exists().where(Cycle.id == QueueEntry.cycle_id, Cycle.state == CycleState.labeling)
    stmt = (
        select(QueueEntry.id.label("entry_id"), QueueEntry.cycle_id, *_ITEM)
        .join(Item, Item.id == QueueEntry.item_id)
        .where(
            QueueEntry.project_id == project_id,
            QueueEntry.state == QueueState.open,
            labeling,
            QueueEntry.labels_received + QueueEntry.leases_open < QueueEntry.labels_wanted,
            ~labelled,
            ~seen,
        )
        .order_by(QueueEntry.rank, QueueEntry.id)
        .limit(1)
        .with_for_update(skip_locked=True, of=QueueEntry)
    )
    return db.execute(stmt).first()


def add_lease(
    db: Session,
    *,
    project_id: int,
    entry_id: int,
    item_id: int,
    annotator_id: int,
    created_at: datetime,
    expires_at: datetime,
) -> int:
    """Insert a lease on a locked queue entry and count it there; returns the lease id."""
    lease_id = db.execute(
        insert(Lease)
        .values(
            project_id=project_id,
            queue_entry_id=entry_id,
            item_id=item_id,
            annotator_id=annotator_id,
            created_at=created_at,
            expires_at=expires_at,
        )
        .returning(Lease.id)
    ).scalar_one()
    db.execute(
        update(QueueEntry)
        .where(QueueEntry.id == entry_id)
        .values(leases_open=QueueEntry.leases_open + 1)
    )
    return int(lease_id)


def close_lease(
    db: Session, item_id: int, annotator_id: int, now: datetime, outcome: LeaseOutcome
) -> Row[int, int] | None:
    """Close the annotator's live (unexpired) lease on an item; its ``id`` and
    ``queue_entry_id``, or None when there is none. The UPDATE locks the row until the
    commit, as ``FOR UPDATE`` would, against a concurrent sweep or skip."""
    stmt = (
        update(Lease)
        .where(
            Lease.item_id == item_id,
            Lease.annotator_id == annotator_id,
            Lease.released_at.is_(None),
            Lease.expires_at > now,
        )
        .values(released_at=now, outcome=outcome)
        .returning(Lease.id, Lease.queue_entry_id)
    )
    return db.execute(stmt, execution_options={"synchronize_session": False}).first()


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


def count_label(db: Session, entry_id: int) -> Row[int, QueueState]:
    """One label in, one lease closed on the entry, ``done`` when it has the labels it
    wants; returns ``cycle_id`` and ``state`` (after). One statement: it locks the row."""
    received = QueueEntry.labels_received + 1
    stmt = (
        update(QueueEntry)
        .where(QueueEntry.id == entry_id)
        .values(
            leases_open=QueueEntry.leases_open - 1,
            labels_received=received,
            state=case(
                (received >= QueueEntry.labels_wanted, QueueState.done.value),
                else_=QueueEntry.state,
            ),
        )
        .returning(QueueEntry.cycle_id, QueueEntry.state)
    )
    return db.execute(stmt, execution_options={"synchronize_session": False}).one()


def want_another_label(db: Session, entry_id: int) -> None:
    """Keep the entry open for one more label than it has (cleaning without a majority)."""
    db.execute(
        update(QueueEntry)
        .where(QueueEntry.id == entry_id)
        .values(labels_wanted=QueueEntry.labels_received + 1, state=QueueState.open),
        execution_options={"synchronize_session": False},
    )


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
