"""The API's cancel racing the worker's transitions on one cycle, from real threads with
their own connections and transactions, committed (no test transaction around them): the
state machine's compare-and-set lets exactly one side win, and the loser changes nothing."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.core.db import make_engine, make_session_factory
from app.core.enums import CycleState, QueueState, Role
from app.core.errors import Conflict
from app.core.tasks import bind_sender
from app.cycles import service
from app.cycles.models import Cycle
from app.cycles.schemas import CycleCreate
from app.cycles.states import RUNNING
from app.projects.models import Project
from app.queue.models import QueueEntry
from tests import services as build
from tests.backends import BACKENDS, fresh_database
from tests.services import RecordingSender
from worker.pipeline import transitions
from worker.pipeline.snapshot import load_inputs

S = CycleState
ROUNDS = 12


@pytest.fixture(params=BACKENDS)
def committed(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    with fresh_database(str(request.param), tmp_path) as url:
        engine = make_engine(url)
        yield make_session_factory(engine)
        engine.dispose()


def _setup(factory: sessionmaker[Session], n: int, state: CycleState) -> tuple[int, list[int]]:
    with factory() as db:
        owner = build.person(db, f"eng{n}", Role.engineer)
        project = build.project(db, owner, name=f"p{n}")
        ids = build.items(db, project, 4)
        cycle = build.cycle(db, project, state)
        db.commit()
        return cycle.id, ids


def _cancel(factory: sessionmaker[Session], cycle_id: int) -> bool:
    """What the cancel route does: one request's transaction."""
    with factory() as db:
        bind_sender(db, RecordingSender())
        cycle = db.get_one(Cycle, cycle_id)
        try:
            service.cancel(db, cycle)
        except Conflict as exc:
            db.rollback()
            if exc.code != "illegal_transition":
                raise
            return False
        db.commit()
        return True


def _race(first: Callable[[], Any], second: Callable[[], Any]) -> tuple[Any, Any]:
    barrier = threading.Barrier(2)
    out: list[Any] = [None, None]
    errors: list[BaseException] = []

    def run(i: int, work: Callable[[], Any]) -> None:
        try:
            barrier.wait(timeout=30)
            out[i] = work()
        except BaseException as exc:  # re-raised in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, w)) for i, w in enumerate((first, second))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    if errors:
        raise errors[0]
    return out[0], out[1]


def _state(factory: sessionmaker[Session], cycle_id: int) -> CycleState:
    with factory() as db:
        return db.get_one(Cycle, cycle_id).state


def test_cancel_against_a_failing_worker_one_wins(committed: sessionmaker[Session]) -> None:
    winners = set()
    for n in range(ROUNDS):
        cycle_id, _ = _setup(committed, n, S.training)
        cancelled, failed = _race(
            partial(_cancel, committed, cycle_id),
            partial(transitions.fail, committed, cycle_id, "boom"),
        )
        assert cancelled != failed, "exactly one of cancel and fail moves the cycle"
        assert _state(committed, cycle_id) is (S.cancelled if cancelled else S.failed)
        winners.add("cancel" if cancelled else "fail")
    assert winners  # (which side wins is up to the scheduler)


def test_cancel_against_the_queue_opening_leaves_no_open_entry(
    committed: sessionmaker[Session],
) -> None:
    for n in range(ROUNDS):
        cycle_id, ids = _setup(committed, n, S.scoring)
        with committed() as db:
            inputs = load_inputs(db, db.get_one(Cycle, cycle_id))
        cancelled, opened = _race(
            partial(_cancel, committed, cycle_id),
            partial(transitions.open_queue, committed, inputs, ids, [4.0, 3.0, 2.0, 1.0]),
        )
        # Cancel always may (scoring and labeling both allow it); the queue opens only if it
        # came first, and then the cancel closes what it wrote.
        assert cancelled
        assert _state(committed, cycle_id) is S.cancelled
        with committed() as db:
            states = db.execute(
                select(QueueEntry.state, func.count())
                .where(QueueEntry.cycle_id == cycle_id)
                .group_by(QueueEntry.state)
            ).all()
        assert dict(states) == ({QueueState.cancelled: len(ids)} if opened else {})


def test_two_claims_of_a_created_cycle_run_it_once(committed: sessionmaker[Session]) -> None:
    for n in range(ROUNDS):
        cycle_id, _ = _setup(committed, n, S.created)
        # Two messages (the original and the sweep's re-send): the loser finds the cycle
        # claimed by the other, which it may not take over.
        a, b = _race(
            partial(transitions.claim, committed, cycle_id, task_id="a"),
            partial(transitions.claim, committed, cycle_id, task_id="b"),
        )
        assert (a is None) != (b is None)
        with committed() as db:
            cycle = db.get_one(Cycle, cycle_id)
        assert (cycle.state, cycle.attempts) == (S.training, 1)
        assert cycle.claimed_by == ("a" if a is not None else "b")


def _retry(factory: sessionmaker[Session], cycle_id: int) -> str:
    with factory() as db:
        bind_sender(db, RecordingSender())
        try:
            service.retry(db, db.get_one(Cycle, cycle_id))
        except Conflict as exc:
            db.rollback()
            return exc.code
        db.commit()
        return "retried"


def test_two_retries_in_one_project_start_one_cycle(committed: sessionmaker[Session]) -> None:
    for n in range(ROUNDS):
        first, _ = _setup(committed, n, S.failed)
        with committed() as db:
            project_id = db.get_one(Cycle, first).project_id
            second = build.cycle(db, db.get_one(Project, project_id), S.failed).id
            db.commit()
        outcomes = _race(partial(_retry, committed, first), partial(_retry, committed, second))
        assert sorted(outcomes) == ["cycle_running", "retried"]
        with committed() as db:
            running = db.scalar(
                select(func.count(Cycle.id)).where(
                    Cycle.project_id == project_id, Cycle.state.in_(RUNNING)
                )
            )
        assert running == 1


def _start(factory: sessionmaker[Session], project_id: int) -> str:
    with factory() as db:
        bind_sender(db, RecordingSender())
        try:
            service.start(db, None, db.get_one(Project, project_id), CycleCreate())
        except Conflict as exc:
            db.rollback()
            return exc.code
        db.commit()
        return "started"


def test_a_start_racing_a_retry_leaves_one_cycle_running(
    committed: sessionmaker[Session],
) -> None:
    for n in range(ROUNDS):
        failed, _ = _setup(committed, n, S.failed)
        with committed() as db:
            project_id = db.get_one(Cycle, failed).project_id
        outcomes = _race(partial(_retry, committed, failed), partial(_start, committed, project_id))
        assert sorted(outcomes) in (["cycle_running", "retried"], ["cycle_running", "started"])
        with committed() as db:
            running = db.scalar(
                select(func.count(Cycle.id)).where(
                    Cycle.project_id == project_id, Cycle.state.in_(RUNNING)
                )
            )
        assert running == 1
