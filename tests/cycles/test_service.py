"""``app.cycles.service`` on the test's rolled-back session, both databases: start, retry,
cancel and the completion of a labelled batch, each through the state machine."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.core.enums import CycleState, LeaseOutcome, QueueState, Role
from app.core.errors import Conflict
from app.cycles import service
from app.cycles.schemas import CycleCreate
from app.cycles.states import RUNNING, TRANSITIONS
from app.queue import service as queue
from app.queue.models import Lease, QueueEntry
from tests import services as build
from tests.services import RecordingSender

S = CycleState


def test_start_queues_the_run_task_after_the_commit(db: Session, sender: RecordingSender) -> None:
    owner = build.person(db, "eng", Role.engineer)
    project = build.project(db, owner)
    cycle = service.start(db, owner, project, CycleCreate())
    assert cycle.state is S.created
    assert sender.sent == []
    db.commit()
    assert sender.sent == [("annoloop.cycles.run", [cycle.id], "train")]


def test_a_second_start_while_one_runs_is_a_409(db: Session) -> None:
    owner = build.person(db, "eng", Role.engineer)
    project = build.project(db, owner)
    service.start(db, owner, project, CycleCreate())
    with pytest.raises(Conflict) as refused:
        service.start(db, owner, project, CycleCreate())
    assert refused.value.code == "cycle_running"


@pytest.mark.parametrize("state", list(CycleState))
def test_cancel_follows_the_table(db: Session, state: CycleState) -> None:
    owner = build.person(db, "eng", Role.engineer)
    project = build.project(db, owner)
    cycle = build.cycle(db, project, state)
    if S.cancelled in TRANSITIONS[state]:
        assert service.cancel(db, cycle).state is S.cancelled
        assert cycle.finished_at is not None
    else:
        with pytest.raises(Conflict) as refused:
            service.cancel(db, cycle)
        assert refused.value.code == "illegal_transition"
        assert refused.value.detail == {"state": state.value, "to": "cancelled"}
        assert f"cannot cancel a cycle that is {state.value}" in refused.value.message
        db.refresh(cycle)
        assert cycle.state is state  # changed nothing
        assert cycle.finished_at is None


@pytest.mark.parametrize("state", list(CycleState))
def test_retry_follows_the_table(db: Session, sender: RecordingSender, state: CycleState) -> None:
    owner = build.person(db, "eng", Role.engineer)
    project = build.project(db, owner)
    cycle = build.cycle(db, project, state)
    cycle.error = "boom"
    db.flush()
    # A training cycle goes back to ``created`` only by pausing, never by a retry.
    if S.created in TRANSITIONS[state] and state is not S.training:
        assert service.retry(db, cycle).state is S.created
        assert cycle.error is None
        db.commit()
        assert sender.sent == [("annoloop.cycles.run", [cycle.id], "train")]
    else:
        with pytest.raises(Conflict) as refused:
            service.retry(db, cycle)
        assert refused.value.code == "illegal_transition"
        db.commit()
        assert sender.sent == []
        assert cycle.state is state
        assert cycle.error == "boom"


def test_retry_waits_for_another_running_cycle(db: Session) -> None:
    owner = build.person(db, "eng", Role.engineer)
    project = build.project(db, owner)
    failed = build.cycle(db, project, S.failed)
    build.cycle(db, project, S.training)
    with pytest.raises(Conflict) as refused:
        service.retry(db, failed)
    assert refused.value.code == "cycle_running"


def test_cancel_closes_open_entries_and_live_leases(db: Session) -> None:
    owner = build.person(db, "eng", Role.engineer)
    worker = build.person(db, "ann")
    project = build.project(db, owner)
    ids = build.items(db, project, 3)
    cycle = build.cycle(db, project, S.labeling, queued=ids)
    leased = queue.next_item(db, worker, project, lease_seconds=600)
    assert leased.status == "leased"
    service.cancel(db, cycle)
    entries = db.scalars(select(QueueEntry).where(QueueEntry.cycle_id == cycle.id)).all()
    assert {(e.state, e.leases_open) for e in entries} == {(QueueState.cancelled, 0)}
    (lease,) = db.scalars(select(Lease).where(Lease.project_id == project.id)).all()
    assert lease.outcome is LeaseOutcome.cancelled
    assert queue.next_item(db, worker, project, lease_seconds=600).status == "queue_empty"


def test_complete_if_labelled_closes_a_finished_batch_once(
    db: Session, sender: RecordingSender
) -> None:
    owner = build.person(db, "eng", Role.engineer)
    project = build.project(db, owner, auto_advance=True)
    (item,) = build.items(db, project, 1)
    cycle = build.cycle(db, project, S.labeling, queued=[item])
    assert service.complete_if_labelled(db, project.id) is None  # an entry is still open
    assert cycle.state is S.labeling
    db.execute(update(QueueEntry).values(state=QueueState.done))
    started = service.complete_if_labelled(db, project.id)
    db.refresh(cycle)
    assert cycle.state is S.completed
    assert started is not None
    assert (started.state in RUNNING, started.number) == (True, 2)
    assert service.complete_if_labelled(db, project.id) is None  # idempotent
    db.commit()
    assert sender.sent == [("annoloop.cycles.run", [started.id], "train")]
