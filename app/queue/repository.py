"""Queries for the annotation queue and its leases."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, Row, bindparam, case, exists, func, insert, or_, select, update
from sqlalchemy.orm import Session

from app.annotations.models import Annotation
from app.core.db import run_plain
from app.core.enums import CycleState, LeaseOutcome, QueueState
from app.cycles.models import Cycle
from app.items.models import Item
from app.queue.models import Lease, QueueEntry

_NO_SYNC = {"synchronize_session": False}


# The statements every `next` or submit runs are built once, here: building one (with its
# cache key) cost more than running it on SQLite.
# No ORDER BY: SQLite would then walk the whole table in id order instead of the partial
# expiry index (a scan of every lease ever made, on every `next`). Sweeps never wait on
# each other's leases (SKIP LOCKED); the entries they give slots back to are sorted below.
_STALE = (
    select(Lease.id, Lease.queue_entry_id)
    .where(Lease.released_at.is_(None), Lease.expires_at <= bindparam("now"))
    .with_for_update(skip_locked=True)
)


def expire_stale(db: Session, now: datetime) -> int:
    """Close leases past their expiry and give their slots back; returns how many.

    Rows are claimed with SKIP LOCKED, so concurrent sweeps never wait on each other, and a
    lease being submitted (locked) is left alone; slots go back entry by entry in id order,
    so sweeps cannot deadlock.
    """
    # R-LEASE-SWEEP (the hot path: app/fastpath/sql/next.sql)
    stale = run_plain(db, _STALE, {"now": now}).all()
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


_HELD = (
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
        Lease.project_id == bindparam("project_id"),
        Lease.annotator_id == bindparam("annotator_id"),
        Lease.released_at.is_(None),
        Lease.expires_at > bindparam("now"),
    )
    .order_by(Lease.id)
    .limit(bindparam("limit", type_=Integer))
)


def held_leases(
    db: Session, project_id: int, annotator_id: int, now: datetime, limit: int
) -> list[Row[Any]]:
    """The annotator's live leases in this project, oldest first, with their items and
    cycles: ``id``, ``queue_entry_id``, ``created_at``, ``expires_at``, ``cycle_id``, item."""
    params = {"project_id": project_id, "annotator_id": annotator_id, "now": now, "limit": limit}
    return list(run_plain(db, _HELD, params).all())


_OPEN_LEASES = select(func.count(Lease.id)).where(
    Lease.project_id == bindparam("project_id"), Lease.released_at.is_(None)
)


def open_leases(db: Session, project_id: int) -> int:
    return int(run_plain(db, _OPEN_LEASES, {"project_id": project_id}).scalar() or 0)


_ANNOTATOR = bindparam("annotator_id", type_=Integer)
# R-PICK-ORDER (the hot path: app/fastpath/sql/next.sql)
_PICK = (
    select(QueueEntry.id.label("entry_id"), QueueEntry.cycle_id, *_ITEM)
    .join(Item, Item.id == QueueEntry.item_id)
    .where(
        QueueEntry.project_id == bindparam("project_id"),
        QueueEntry.state == QueueState.open,
        # A correlated EXISTS, not a join: with the cycle as the outer loop SQLite sorted
        # every open entry on each call instead of walking the index in (rank, id) order.
        exists().where(Cycle.id == QueueEntry.cycle_id, Cycle.state == CycleState.labeling),
        QueueEntry.labels_received + QueueEntry.leases_open < QueueEntry.labels_wanted,
        ~exists().where(  # labelled by this annotator
            Annotation.item_id == QueueEntry.item_id,
            Annotation.annotator_id == _ANNOTATOR,
            Annotation.retracted_at.is_(None),
        ),
        ~exists().where(  # held or skipped by this annotator
            Lease.queue_entry_id == QueueEntry.id,
            Lease.annotator_id == _ANNOTATOR,
            or_(Lease.released_at.is_(None), Lease.outcome == LeaseOutcome.skipped),
        ),
    )
    .order_by(QueueEntry.rank, QueueEntry.id)
    .limit(1)
    .with_for_update(skip_locked=True, of=QueueEntry)
)


def pick_entry(db: Session, project_id: int, annotator_id: int) -> Row[Any] | None:
    """The best-ranked entry with a free slot that this annotator has neither labelled nor
    skipped, locked (Postgres: rows other requests hold are skipped, not waited for), with
    its item: ``entry_id``, ``cycle_id``, item columns."""
    return run_plain(db, _PICK, {"project_id": project_id, "annotator_id": annotator_id}).first()


_INSERT_LEASE = insert(Lease).returning(Lease.id)
_COUNT_LEASE = (
    update(QueueEntry)
    .where(QueueEntry.id == bindparam("entry_id"))
    .values(leases_open=QueueEntry.leases_open + 1)
)


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
    values = {
        "project_id": project_id,
        "queue_entry_id": entry_id,
        "item_id": item_id,
        "annotator_id": annotator_id,
        "created_at": created_at,
        "expires_at": expires_at,
    }
    # R-LEASE
    lease_id = run_plain(db, _INSERT_LEASE, values).scalar_one()
    run_plain(db, _COUNT_LEASE, {"entry_id": entry_id})
    return int(lease_id)


_CLOSE_LEASE = (
    update(Lease)
    .where(
        # Not named after columns: an UPDATE reserves those names for its SET clause.
        Lease.item_id == bindparam("the_item"),
        Lease.annotator_id == bindparam("the_annotator"),
        Lease.released_at.is_(None),
        Lease.expires_at > bindparam("now"),
    )
    .values(released_at=bindparam("now"), outcome=bindparam("the_outcome"))
    .returning(Lease.id, Lease.queue_entry_id)
)


def close_lease(
    db: Session, item_id: int, annotator_id: int, now: datetime, outcome: LeaseOutcome
) -> Row[Any] | None:
    """Close the annotator's live (unexpired) lease on an item; its ``id`` and
    ``queue_entry_id``, or None when there is none. The UPDATE locks the row until the
    commit, as ``FOR UPDATE`` would, against a concurrent sweep or skip."""
    params = {
        "the_item": item_id,
        "the_annotator": annotator_id,
        "now": now,
        "the_outcome": outcome,
    }
    return run_plain(db, _CLOSE_LEASE, params).first()


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


_RECEIVED = QueueEntry.labels_received + 1
_COUNT_LABEL = (
    update(QueueEntry)
    .where(QueueEntry.id == bindparam("entry_id"))
    .values(
        leases_open=QueueEntry.leases_open - 1,
        labels_received=_RECEIVED,
        state=case(
            (QueueEntry.labels_wanted <= _RECEIVED, QueueState.done.value),
            else_=QueueEntry.state,
        ),
    )
    .returning(
        QueueEntry.cycle_id,
        QueueEntry.state,
        QueueEntry.labels_wanted,
        QueueEntry.labels_received,
        QueueEntry.stop_lead,
    )
)


def count_label(db: Session, entry_id: int) -> Row[Any]:
    """One label in, one lease closed on the entry, ``done`` when it has the labels it
    wants; returns ``cycle_id`` and ``state`` (after). One statement: it locks the row."""
    return run_plain(db, _COUNT_LABEL, {"entry_id": entry_id}).one()


def close_decided(db: Session, entry_id: int) -> None:
    """The entry wants no more labels: its item's majority is decided."""
    db.execute(
        update(QueueEntry)
        .where(QueueEntry.id == entry_id)
        .values(labels_wanted=QueueEntry.labels_received, state=QueueState.done),
        execution_options=_NO_SYNC,
    )


def want_another_label(db: Session, entry_id: int) -> None:
    """Keep the entry open for one more label than it has (cleaning without a majority)."""
    db.execute(
        update(QueueEntry)
        .where(QueueEntry.id == entry_id)
        .values(labels_wanted=QueueEntry.labels_received + 1, state=QueueState.open),
        execution_options=_NO_SYNC,
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


_RETRACT = (
    update(Annotation)
    .where(Annotation.id == bindparam("annotation_id"), Annotation.retracted_at.is_(None))
    .values(retracted_at=bindparam("now"))
    .returning(Annotation.id)
)


def retract(db: Session, annotation_id: int, now: datetime) -> bool:
    """Retract a live label; False when it was retracted already."""
    params = {"annotation_id": annotation_id, "now": now}
    return run_plain(db, _RETRACT, params).first() is not None


def release_open(db: Session, cycle_id: int, now: datetime) -> None:
    """Cancel the cycle's open entries and close their live leases (outcome ``cancelled``)."""
    open_entries = select(QueueEntry.id).where(
        QueueEntry.cycle_id == cycle_id, QueueEntry.state == QueueState.open
    )
    db.execute(
        update(Lease)
        .where(Lease.queue_entry_id.in_(open_entries), Lease.released_at.is_(None))
        .values(released_at=now, outcome=LeaseOutcome.cancelled),
        execution_options=_NO_SYNC,
    )
    db.execute(
        update(QueueEntry)
        .where(QueueEntry.cycle_id == cycle_id, QueueEntry.state == QueueState.open)
        .values(state=QueueState.cancelled, leases_open=0),
        execution_options=_NO_SYNC,
    )
