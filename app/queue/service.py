"""Handing out queued items under leases, and what a label does to the queue.

Concurrency: a free slot is decided on the locked ``queue_entry`` row (its own
``labels_received`` and ``leases_open`` columns). Postgres takes the row with
``FOR UPDATE SKIP LOCKED`` so annotators never wait on each other; SQLite serialises writers
(every transaction is ``BEGIN IMMEDIATE``). Lock order is always lease, then queue entry, then
project, so sweeps, submits and skips cannot deadlock.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from app.annotations.models import Annotation
from app.annotations.votes import summarise
from app.auth.models import Annotator
from app.core.db import utcnow
from app.core.enums import CycleState, LeaseOutcome, ProjectKind, QueueState
from app.core.errors import Conflict, NotFound
from app.cycles import repository as cycles
from app.items.models import Item
from app.items.schemas import ItemOut
from app.projects.models import Project
from app.queue import repository
from app.queue.models import Lease, QueueEntry
from app.queue.schemas import AheadOut, LeaseOut, NextOut


def next_item(
    db: Session, actor: Annotator, project: Project, lease_seconds: int, ahead: int = 0
) -> NextOut:
    """The item to label now; with ``ahead=1`` also the one after it, leased already so the
    page can load its image while the current one is shown (a prefetch that is a real lease:
    nobody else can be handed that slot in between)."""
    now = utcnow()
    repository.expire_stale(db, now)
    # Asking again (a reload, a retry) gives back the same items, oldest lease first.
    leases = repository.held_leases(db, project.id, actor.id, now, limit=1 + ahead)
    refusal: NextOut | None = None
    while len(leases) < 1 + ahead:
        got = _lease_another(db, actor, project, lease_seconds)
        if isinstance(got, NextOut):
            refusal = got
            break
        leases.append(got)
    if not leases:
        assert refusal is not None
        return refusal
    out = _leased(db, leases[0])
    if len(leases) > 1:
        following = _leased(db, leases[1])
        assert following.lease is not None
        assert following.item is not None
        out.ahead = AheadOut(
            lease=following.lease, item=following.item, cycle_id=following.cycle_id
        )
    return out


def _lease_another(
    db: Session, actor: Annotator, project: Project, lease_seconds: int
) -> Lease | NextOut:
    """A new lease on the best free slot, or why there is none."""
    if project.budget is not None and (
        project.labels_spent + repository.open_leases(db, project.id) >= project.budget
    ):
        return NextOut(status="budget_spent")
    entry = repository.pick_entry(db, project.id, actor.id)
    if entry is None:
        current = cycles.latest(db, project.id)
        return NextOut(
            status="queue_empty",
            cycle_id=current.id if current else None,
            cycle_state=current.state.value if current else None,
        )
    return _new_lease(db, actor, entry, lease_seconds)


def _new_lease(db: Session, actor: Annotator, entry: QueueEntry, lease_seconds: int) -> Lease:
    now = utcnow()
    entry.leases_open += 1
    lease = Lease(
        project_id=entry.project_id,
        queue_entry_id=entry.id,
        item_id=entry.item_id,
        annotator_id=actor.id,
        created_at=now,
        expires_at=now + timedelta(seconds=lease_seconds),
    )
    db.add(lease)
    db.flush()
    return lease


def _leased(db: Session, lease: Lease) -> NextOut:
    item = db.get(Item, lease.item_id)
    entry = db.get(QueueEntry, lease.queue_entry_id)
    assert item is not None
    assert entry is not None
    return NextOut(
        status="leased",
        lease=LeaseOut.model_validate(lease),
        item=ItemOut.model_validate(item),
        cycle_id=entry.cycle_id,
        cycle_state=CycleState.labeling.value,
    )


def take_lease(db: Session, actor: Annotator, item: Item) -> tuple[Lease, QueueEntry]:
    """The lease a human label is given under, locked; 409 when there is none."""
    lease = repository.lease_for_update(db, item.id, actor.id)
    if lease is None:
        earlier = repository.last_lease(db, item.id, actor.id)
        if earlier is not None and earlier.outcome is LeaseOutcome.expired:
            raise Conflict(
                "your lease on this item expired; ask for the next item", code="lease_expired"
            )
        raise Conflict(f"item {item.id} is not leased to you", code="not_leased")
    if lease.expires_at <= utcnow():
        raise Conflict(
            "your lease on this item expired; ask for the next item", code="lease_expired"
        )
    return lease, repository.entry_for_update(db, lease.queue_entry_id)


def record_label(
    db: Session, project: Project, lease: Lease, entry: QueueEntry, votes: list[int]
) -> bool:
    """Close the lease and count the label; True when the entry needs no more labels.

    ``votes``: every live vote on the item, this one included. When cleaning, an item stays
    queued, one more label at a time, until its votes have a strict majority (the top class
    has more votes than any other), as in the reference protocol.
    """
    lease.released_at = utcnow()
    lease.outcome = LeaseOutcome.labelled
    entry.leases_open -= 1
    entry.labels_received += 1
    settled = summarise(votes, len(project.classes)).majority is not None
    if project.kind is ProjectKind.clean and not settled:
        entry.labels_wanted = entry.labels_received + 1
    if entry.labels_received >= entry.labels_wanted:
        entry.state = QueueState.done
    return entry.state is QueueState.done


def spend_budget(db: Session, project: Project, n: int = 1) -> None:
    """Atomically count ``n`` labels against the budget, or refuse with 409."""
    stmt = update(Project).where(Project.id == project.id)
    column = Project.relabel_budget if project.kind is ProjectKind.clean else Project.label_budget
    if n > 0 and project.budget is not None:
        stmt = stmt.where(Project.labels_spent + n <= column)
    # RETURNING instead of a refresh: the project row stays locked until the commit, so
    # every round trip after this update lengthens the queue of concurrent submits.
    spent = db.execute(
        stmt.values(labels_spent=Project.labels_spent + n).returning(Project.labels_spent),
        execution_options={"synchronize_session": False},
    ).scalar()
    if spent is None:
        raise Conflict("the project's label budget is spent", code="budget_spent")
    set_committed_value(project, "labels_spent", spent)


def skip(db: Session, actor: Annotator, lease_id: int) -> None:
    lease = db.get(Lease, lease_id, with_for_update=True)
    if lease is None or lease.annotator_id != actor.id:
        raise NotFound(f"lease {lease_id} not found")
    if lease.released_at is not None:
        raise Conflict(f"lease {lease_id} is already closed ({lease.outcome})", code="lease_closed")
    entry = repository.entry_for_update(db, lease.queue_entry_id)
    lease.released_at = utcnow()
    lease.outcome = LeaseOutcome.skipped
    entry.leases_open -= 1
    db.flush()


def undo_last(db: Session, actor: Annotator, project: Project, lease_seconds: int) -> NextOut:
    """Retract the annotator's last label and lease the item back to them to label again.

    Allowed while the label's cycle is still labelling: once the next cycle has trained on
    the label, it stays (a later label can still outvote it).
    """
    label: Annotation | None = repository.last_human_label(db, project.id, actor.id)
    if label is None or label.cycle_id is None:
        raise Conflict("you have no label to undo in this project", code="nothing_to_undo")
    entry = repository.entry_of(db, label.cycle_id, label.item_id)
    cycle = cycles.get_by_id(db, label.cycle_id)
    if entry is None or cycle is None or cycle.state is not CycleState.labeling:
        raise Conflict(
            "that label's cycle is closed; it can no longer be undone", code="undo_closed"
        )
    label.retracted_at = utcnow()
    entry.labels_received -= 1
    entry.state = QueueState.open
    spend_budget(db, project, -1)
    db.flush()
    return _leased(db, _new_lease(db, actor, entry, lease_seconds))
