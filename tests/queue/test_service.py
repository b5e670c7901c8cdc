"""``app.queue.service`` on the test's rolled-back session, both databases: leases in rank
order, asking again, ahead, skips, expiry, the budget and undo."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.annotations import service as labels
from app.annotations.schemas import AnnotationCreate
from app.auth.models import Annotator
from app.core.db import utcnow
from app.core.enums import CycleState, LeaseOutcome, QueueState, Role
from app.core.errors import Conflict, NotFound
from app.items.models import Item
from app.projects.models import Project
from app.queue import service
from app.queue.models import Lease, QueueEntry
from tests import services as build

LEASE_S = 600


def _world(db: Session, n: int = 3, **settings: object) -> tuple[Project, list[int], int]:
    owner = build.person(db, "eng", Role.engineer)
    project = build.project(db, owner, **settings)
    ids = build.items(db, project, n)
    cycle = build.cycle(db, project, CycleState.labeling, queued=ids)
    return project, ids, cycle.id


def _label(db: Session, who: Annotator, project: Project, item_id: int, k: int = 0) -> None:
    item = db.get_one(Item, item_id)
    labels.submit(db, who, project, item, AnnotationCreate(class_index=k))


def test_leases_follow_the_rank_and_asking_again_returns_the_same(db: Session) -> None:
    project, ids, cycle_id = _world(db)
    ann = build.person(db, "ann")
    first = service.next_item(db, ann, project, LEASE_S)
    assert first.status == "leased"
    assert first.item is not None
    assert first.lease is not None
    assert (first.item.id, first.cycle_id) == (ids[0], cycle_id)
    again = service.next_item(db, ann, project, LEASE_S)
    assert again.lease is not None
    assert again.lease.id == first.lease.id
    other = service.next_item(db, build.person(db, "bob"), project, LEASE_S)
    assert other.item is not None
    assert other.item.id == ids[1]  # one label wanted: the first item is taken


def test_ahead_leases_the_following_item_too(db: Session) -> None:
    project, ids, _ = _world(db)
    out = service.next_item(db, build.person(db, "ann"), project, LEASE_S, ahead=1)
    assert out.item is not None
    assert out.ahead is not None
    assert (out.item.id, out.ahead.item.id) == (ids[0], ids[1])
    assert db.scalar(select(QueueEntry.leases_open).where(QueueEntry.item_id == ids[1])) == 1


def test_a_skipped_item_goes_to_someone_else_never_back_to_the_skipper(db: Session) -> None:
    project, ids, _ = _world(db, n=2)
    ann, bob = build.person(db, "ann"), build.person(db, "bob")
    lease = service.next_item(db, ann, project, LEASE_S).lease
    assert lease is not None
    service.skip(db, ann, lease.id)
    assert db.get_one(Lease, lease.id).outcome is LeaseOutcome.skipped
    nxt = service.next_item(db, ann, project, LEASE_S)
    assert nxt.item is not None
    assert nxt.item.id == ids[1]
    theirs = service.next_item(db, bob, project, LEASE_S)
    assert theirs.item is not None
    assert theirs.item.id == ids[0]
    with pytest.raises(Conflict) as twice:
        service.skip(db, ann, lease.id)
    assert twice.value.code == "lease_closed"
    with pytest.raises(NotFound):
        service.skip(db, bob, lease.id)  # not theirs


def test_an_expired_lease_is_swept_and_its_item_handed_out_again(db: Session) -> None:
    project, ids, _ = _world(db, n=1)
    ann, bob = build.person(db, "ann"), build.person(db, "bob")
    lease = service.next_item(db, ann, project, LEASE_S).lease
    assert lease is not None
    assert service.next_item(db, bob, project, LEASE_S).status == "queue_empty"
    db.execute(update(Lease).values(expires_at=utcnow() - timedelta(seconds=1)))
    theirs = service.next_item(db, bob, project, LEASE_S)
    assert theirs.item is not None
    assert theirs.item.id == ids[0]
    db.expire_all()
    assert db.get_one(Lease, lease.id).outcome is LeaseOutcome.expired
    with pytest.raises(Conflict) as late:
        _label(db, ann, project, ids[0])
    assert late.value.code == "lease_expired"


def test_the_budget_stops_new_leases_counting_open_ones(db: Session) -> None:
    project, _, _ = _world(db, label_budget=1)
    ann, bob = build.person(db, "ann"), build.person(db, "bob")
    assert service.next_item(db, ann, project, LEASE_S).status == "leased"
    # One label left and one lease open: nobody else gets a lease that could not be spent.
    assert service.next_item(db, bob, project, LEASE_S).status == "budget_spent"


def test_queue_empty_says_which_cycle(db: Session) -> None:
    project, ids, cycle_id = _world(db, n=1)
    ann = build.person(db, "ann")
    leased = service.next_item(db, ann, project, LEASE_S)
    assert leased.item is not None
    _label(db, ann, project, ids[0])
    empty = service.next_item(db, ann, project, LEASE_S)
    assert (empty.status, empty.cycle_id, empty.cycle_state) == (
        "queue_empty",
        cycle_id,
        "labeling",
    )


def test_undo_retracts_the_last_label_and_leases_the_item_back(db: Session) -> None:
    project, ids, _ = _world(db, n=2)
    ann = build.person(db, "ann")
    service.next_item(db, ann, project, LEASE_S)
    _label(db, ann, project, ids[0], k=2)
    assert project.labels_spent == 1
    back = service.undo_last(db, ann, project, LEASE_S)
    assert back.item is not None
    assert back.item.id == ids[0]
    assert project.labels_spent == 0
    entry = db.scalars(select(QueueEntry).where(QueueEntry.item_id == ids[0])).one()
    db.refresh(entry)
    assert (entry.state, entry.labels_received) == (QueueState.open, 0)
    with pytest.raises(Conflict) as nothing:
        service.undo_last(db, ann, project, LEASE_S)
    assert nothing.value.code == "nothing_to_undo"
