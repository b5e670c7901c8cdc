"""Handing out queued items under leases, and what a label does to the queue.

Concurrency: a free slot is decided on the locked ``queue_entry`` row (its own
``labels_received`` and ``leases_open`` columns). Postgres takes the row with
``FOR UPDATE SKIP LOCKED`` so annotators never wait on each other; SQLite serialises writers
(every transaction is ``BEGIN IMMEDIATE``). Lock order is always lease, then queue entry, then
project, so sweeps, submits and skips cannot deadlock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Row, bindparam, case, or_, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from app.annotations.models import Annotation
from app.annotations.votes import summarise
from app.auth.models import Annotator
from app.core.db import run_plain, utcnow
from app.core.enums import CycleState, LeaseOutcome, ProjectKind, QueueState
from app.core.errors import Conflict, NotFound
from app.cycles import repository as cycles
from app.cycles.strategies import MIXED_QUEUE_STRATEGY
from app.items.models import Item
from app.items.schemas import ItemOut
from app.projects.models import Project
from app.queue import repository
from app.queue.models import Lease
from app.queue.schemas import AheadOut, LeaseOut, NextOut


def next_item(
    db: Session, actor: Annotator, project: Project, lease_seconds: int, ahead: int = 0
) -> NextOut:
    """The item to label now; with ``ahead=1`` also the one after it, leased already so the
    page can load its image while the current one is shown (a prefetch that is a real lease:
    nobody else can be handed that slot in between).

    Every annotator calls this once per label, so it reads and writes plain columns (no ORM
    objects) in as few statements as the guarantees allow: the sweep, the held leases, then
    per new lease the locked pick (with its item), the lease insert and the slot count.
    """
    now = utcnow()
    repository.expire_stale(db, now)  # R-LEASE-SWEEP
    # R-LEASE-HELD. Asking again (a reload, a retry) gives back the same items, oldest lease
    # first. The hot path applies these rules in app/fastpath/sql/next.sql.
    leased = [
        _held(row) for row in repository.held_leases(db, project.id, actor.id, now, 1 + ahead)
    ]
    refusal: NextOut | None = None
    while len(leased) < 1 + ahead:
        got = _lease_another(db, actor, project, lease_seconds)
        if got.status != "leased":
            refusal = got
            break
        leased.append(got)
    return with_ahead(leased, refusal)


def with_ahead(leased: list[NextOut], refusal: NextOut | None) -> NextOut:
    """The answer to ``next``: the first lease with the second as ``ahead``, or the refusal
    when there is none."""
    if not leased:
        assert refusal is not None
        return refusal
    out = leased[0]
    if len(leased) > 1:
        following = leased[1]
        assert following.lease is not None
        assert following.item is not None
        out.ahead = AheadOut(
            lease=following.lease, item=following.item, cycle_id=following.cycle_id
        )
    return out


def _lease_another(db: Session, actor: Annotator, project: Project, lease_seconds: int) -> NextOut:
    """A new lease on the best free slot (status ``leased``), or why there is none."""
    # R-BUDGET
    if project.budget is not None and (
        project.labels_spent + repository.open_leases(db, project.id) >= project.budget
    ):
        return NextOut(status="budget_spent")
    picked = repository.pick_entry(db, project.id, actor.id)
    if picked is None:  # R-QUEUE-EMPTY
        current = cycles.latest(db, project.id)
        return NextOut(
            status="queue_empty",
            cycle_id=current.id if current else None,
            cycle_state=current.state.value if current else None,
        )
    lease = _new_lease(db, actor, project.id, picked.entry_id, picked.item_id, lease_seconds)
    return _leased(lease, _item_out(picked), picked.cycle_id)


def _new_lease(
    db: Session, actor: Annotator, project_id: int, entry_id: int, item_id: int, seconds: int
) -> LeaseOut:
    """Lease a slot of a queue entry the caller has locked."""
    now = utcnow()
    expires_at = now + timedelta(seconds=seconds)  # R-LEASE
    lease_id = repository.add_lease(
        db,
        project_id=project_id,
        entry_id=entry_id,
        item_id=item_id,
        annotator_id=actor.id,
        created_at=now,
        expires_at=expires_at,
    )
    return LeaseOut(
        id=lease_id, item_id=item_id, queue_entry_id=entry_id, expires_at=expires_at, created_at=now
    )


def _held(row: Row[Any]) -> NextOut:
    lease = LeaseOut(
        id=row.id,
        item_id=row.item_id,
        queue_entry_id=row.queue_entry_id,
        expires_at=row.expires_at,
        created_at=row.created_at,
    )
    return _leased(lease, _item_out(row), row.cycle_id)


def _item_out(row: Row[Any]) -> ItemOut:
    return ItemOut(
        id=row.item_id,
        project_id=row.project_id,
        split=row.split,
        external_id=row.external_id,
        blob_sha256=row.blob_sha256,
        media_type=row.media_type,
        width=row.width,
        height=row.height,
        meta=row.meta,
        created_at=row.item_created_at,
    )


def _leased(lease: LeaseOut, item: ItemOut, cycle_id: int) -> NextOut:
    return NextOut(
        status="leased",
        lease=lease,
        item=item,
        cycle_id=cycle_id,
        cycle_state=CycleState.labeling.value,
    )


@dataclass(frozen=True)
class Labelled:
    """What a label did to the queue: the entry's cycle, and whether the entry is done."""

    cycle_id: int
    entry_id: int
    entry_done: bool
    still_wanted: int = 0  # labels the entry wants beyond those it has
    stop_lead: int | None = None  # the entry's confident lead (``QueueEntry.stop_lead``)


def take_lease(db: Session, actor: Annotator, item: Item) -> int:
    """Close the caller's live lease on the item (a human label is given under it): the
    lease stays locked until the commit. Returns its queue entry; 409 when there is none."""
    now = utcnow()
    # R-NOT-LEASED (the hot path: app/fastpath/sql/submit.sql, as for the rules below)
    closed = repository.close_lease(db, item.id, actor.id, now, LeaseOutcome.labelled)
    if closed is None:
        earlier = repository.last_lease(db, item.id, actor.id)
        if earlier is not None and (
            earlier.outcome is LeaseOutcome.expired
            or (earlier.released_at is None and earlier.expires_at <= now)
        ):
            raise Conflict(
                "your lease on this item expired; ask for the next item", code="lease_expired"
            )
        raise Conflict(f"item {item.id} is not leased to you", code="not_leased")
    return int(closed.queue_entry_id)


def record_label(db: Session, entry_id: int) -> Labelled:
    """Count the label on its queue entry (locking it) and free the lease's slot."""
    row = repository.count_label(db, entry_id)  # R-COUNT-LABEL
    done = row.state is QueueState.done
    return Labelled(
        row.cycle_id, entry_id, done, row.labels_wanted - row.labels_received, row.stop_lead
    )


def settle(db: Session, project: Project, labelled: Labelled, votes: list[int]) -> Labelled:
    """When cleaning, an item stays queued, one more label at a time, until its votes have a
    strict majority (the top class has more votes than any other), as in the reference
    protocol. ``votes``: every live vote on the item, the new one included. ActiveLab's
    mixed queue asks for one label per entry: its next ranking decides whether another
    follows."""
    # R-MAJORITY
    if project.kind is not ProjectKind.clean:
        return labelled
    # The cycle's strategy, not the project's: a cycle may be started with another.
    if cycles.strategy_of(db, labelled.cycle_id) == MIXED_QUEUE_STRATEGY:
        return labelled
    if summarise(votes, len(project.classes)).majority is not None:
        return labelled
    repository.want_another_label(db, labelled.entry_id)
    return Labelled(labelled.cycle_id, labelled.entry_id, entry_done=False)


def stop_if_decided(
    db: Session, project: Project, labelled: Labelled, votes: list[int]
) -> Labelled:
    """The entry is done early when, with ``stop_when_decided``, the top class leads the
    runner-up by more votes than the entry still wants (no further label can change the
    item's majority: labels_per_item 3, two agreeing labels settle it), or when the lead
    reaches the entry's ``stop_lead`` (its posterior is confident enough:
    ``app.annotations.confidence``). ``votes``: every live vote on the item, the new one
    included."""
    # R-STOP-DECIDED
    if labelled.entry_done or not (project.stop_when_decided or labelled.stop_lead):
        return labelled
    counts = sorted(summarise(votes, len(project.classes)).counts, reverse=True)
    lead = counts[0] - (counts[1] if len(counts) > 1 else 0)
    decided = project.stop_when_decided and lead > labelled.still_wanted
    confident = labelled.stop_lead is not None and lead >= labelled.stop_lead
    if not (decided or confident):
        return labelled
    repository.close_decided(db, labelled.entry_id)
    return Labelled(labelled.cycle_id, labelled.entry_id, entry_done=True)


# The budget ``labels_spent`` counts against, read from the row being updated (locked).
_BUDGET = case(
    (Project.kind == ProjectKind.clean, Project.relabel_budget), else_=Project.label_budget
)
_SPEND = (
    update(Project)
    .where(Project.id == bindparam("project_id"))
    .values(labels_spent=Project.labels_spent + bindparam("n"))
    .returning(Project.labels_spent)
)
_SPEND_WITHIN_BUDGET = _SPEND.where(
    or_(_BUDGET.is_(None), Project.labels_spent + bindparam("n") <= _BUDGET)
)


def spend_budget(db: Session, project: Project, n: int = 1) -> None:
    """Atomically count ``n`` labels against the budget, or refuse with 409."""
    # RETURNING instead of a refresh: the project row stays locked until the commit, so
    # every round trip after this update lengthens the queue of concurrent submits.
    stmt = _SPEND_WITHIN_BUDGET if n > 0 else _SPEND  # R-SPEND
    spent = run_plain(db, stmt, {"project_id": project.id, "n": n}).scalar()
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
    # The label was read unlocked: a concurrent undo of it may have committed while this one
    # waited for the entry's lock. Only the undo that still finds it live takes it back.
    now = utcnow()
    if not repository.retract(db, label.id, now):
        raise Conflict("that label was just undone by another request", code="nothing_to_undo")
    set_committed_value(label, "retracted_at", now)
    entry.labels_received -= 1
    entry.state = QueueState.open
    spend_budget(db, project, -1)
    db.flush()
    item = db.get(Item, entry.item_id)
    assert item is not None
    lease = _new_lease(db, actor, project.id, entry.id, entry.item_id, lease_seconds)
    return _leased(lease, ItemOut.model_validate(item), entry.cycle_id)
