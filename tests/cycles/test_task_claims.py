"""Which task message may run a cycle (or a pretraining run) that another has begun: the
claim records the message's Celery id, any message claims a waiting row, and a begun one is
taken over only by the redelivery of its claimer (same id) or an explicit takeover
(``worker/recovery.py``). In-process, on every backend, with the ids Celery would give."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from app.core.blobs import open_blob_store
from app.core.config import Settings
from app.core.enums import CycleState, PretrainingStatus, Role
from app.core.task_names import PRETRAIN, RUN_CYCLE
from app.cycles import service
from app.cycles.models import Cycle
from app.cycles.reconcile import lost_tasks
from app.pretraining.models import Pretraining
from app.projects.models import Project
from tests import services as build
from tests.services import RecordingSender
from worker.pipeline import pretrain, transitions
from worker.pipeline.dispatch import run_cycle_of_any_kind
from worker.pipeline.runtime import Runtime

S = CycleState


@pytest.fixture
def project(db: Session) -> Project:
    owner = build.person(db, "eng", Role.engineer)
    project = build.project(db, owner)
    build.items(db, project, 4)
    db.commit()
    return project


@pytest.fixture
def rt(settings: Settings, factory: sessionmaker[Session]) -> Runtime:
    return Runtime(settings, factory.kw["bind"], factory, open_blob_store(settings))


def _cycle(db: Session, project: Project, state: CycleState) -> int:
    cycle_id = build.cycle(db, project, state).id
    db.commit()
    return cycle_id


def _row(factory: sessionmaker[Session], cycle_id: int) -> tuple[Any, ...]:
    with factory() as db:
        cycle = db.get_one(Cycle, cycle_id)
        return cycle.state, cycle.attempts, cycle.claimed_by


def claim(factory: sessionmaker[Session], cycle_id: int, task_id: str, **kw: Any) -> bool:
    return transitions.claim(factory, cycle_id, task_id=task_id, **kw) is not None


@pytest.mark.parametrize("begun", [S.training, S.scoring])
def test_only_the_claiming_message_takes_over_a_begun_cycle(
    db: Session, factory: sessionmaker[Session], project: Project, begun: CycleState
) -> None:
    cycle_id = _cycle(db, project, S.created)
    assert claim(factory, cycle_id, "first")  # any message claims a created cycle
    assert _row(factory, cycle_id) == (S.training, 1, "first")
    if begun is S.scoring:
        assert transitions.advance(factory, cycle_id, expect=S.training, to=S.scoring)

    assert not claim(factory, cycle_id, "second")  # another copy: left to the first
    assert _row(factory, cycle_id) == (begun, 1, "first")

    assert claim(factory, cycle_id, "first")  # its redelivery: the first worker died
    assert _row(factory, cycle_id) == (S.training, 2, "first")


def test_an_explicit_takeover_claims_a_cycle_another_message_began(
    db: Session, factory: sessionmaker[Session], project: Project
) -> None:
    cycle_id = _cycle(db, project, S.created)
    assert claim(factory, cycle_id, "lost")
    # The embedded broker's re-send at worker start: a new id, but no worker holds the cycle.
    assert claim(factory, cycle_id, "recovery", takeover=True)
    assert _row(factory, cycle_id) == (S.training, 2, "recovery")
    assert not claim(factory, cycle_id, "lost")  # the old message, were it to come back


def test_a_sweep_copy_whose_worker_died_is_taken_over_by_its_redelivery(
    db: Session, factory: sessionmaker[Session], project: Project
) -> None:
    cycle_id = _cycle(db, project, S.created)
    (sent,) = [m for m in lost_tasks(db) if m[0] == RUN_CYCLE.name]
    assert sent == RUN_CYCLE.message([cycle_id])  # a plain message, nothing to tell it apart
    assert claim(factory, cycle_id, "sweep")  # the sweep's copy claims; its worker is killed
    assert not claim(factory, cycle_id, "original")  # the original comes late: nothing
    assert claim(factory, cycle_id, "sweep")  # Redis gives the copy back: same id
    assert _row(factory, cycle_id) == (S.training, 2, "sweep")


def test_two_retries_of_a_failed_cycle_train_it_once(
    db: Session,
    factory: sessionmaker[Session],
    sender: RecordingSender,
    project: Project,
    rt: Runtime,
) -> None:
    cycle_id = _cycle(db, project, S.failed)
    for _ in range(2):
        service.retry(db, db.get_one(Cycle, cycle_id))
        db.commit()
    assert sender.sent == [RUN_CYCLE.message([cycle_id])] * 2
    assert claim(factory, cycle_id, "retry-1")  # the first trains ...
    # ... and the second, taken while it does, leaves the cycle to it (no pipeline runs).
    assert run_cycle_of_any_kind(rt, cycle_id, "retry-2") == "nothing to do"
    assert _row(factory, cycle_id) == (S.training, 1, "retry-1")
    # Had the second come first, the first would be the one to stop.
    other = _cycle(db, project, S.failed)
    with factory() as session:
        session.execute(update(Cycle).where(Cycle.id == cycle_id).values(state=S.completed))
        session.commit()
    service.retry(db, db.get_one(Cycle, other))
    db.commit()
    assert claim(factory, other, "retry-2")
    assert not claim(factory, other, "retry-1")


def test_a_row_claimed_before_ids_were_recorded_may_be_taken_over(
    db: Session, factory: sessionmaker[Session], project: Project
) -> None:
    # Claimed by a worker of the previous version (no id): its redelivery must not be stuck.
    cycle_id = _cycle(db, project, S.training)
    assert _row(factory, cycle_id)[2] is None
    assert claim(factory, cycle_id, "old-message")
    assert _row(factory, cycle_id) == (S.training, 1, "old-message")


def _pretraining(db: Session, project: Project) -> int:
    run = Pretraining(
        project_id=project.id,
        status=PretrainingStatus.queued,
        params={"method": "simclr", "epochs": 1, "seed": 0, "model": _body(project)},
        epochs_done=0,
        losses=[],
    )
    db.add(run)
    db.commit()
    return run.id


def _body(project: Project) -> dict[str, Any]:
    return {"name": "small_cnn", "input_shape": list(project.model_spec["input_shape"])}


def _run(factory: sessionmaker[Session], run_id: int) -> tuple[Any, ...]:
    with factory() as db:
        run = db.get_one(Pretraining, run_id)
        return run.status, run.attempts, run.claimed_by


def test_pretraining_runs_follow_the_same_rule(
    db: Session, factory: sessionmaker[Session], project: Project, rt: Runtime
) -> None:
    run_id = _pretraining(db, project)
    (sent,) = [m for m in lost_tasks(db) if m[0] == PRETRAIN.name]
    assert sent == PRETRAIN.message([run_id])
    assert pretrain._claim(rt, run_id, "sweep", takeover=False) is not None
    assert _run(factory, run_id) == (PretrainingStatus.running, 1, "sweep")
    # Another copy leaves the running run alone, without training (the claim is refused).
    assert pretrain.run_pretraining(rt, run_id, "original") == "nothing to do"
    assert _run(factory, run_id) == (PretrainingStatus.running, 1, "sweep")
    # The sweep copy's redelivery resumes it, as does the embedded broker's takeover.
    assert pretrain._claim(rt, run_id, "sweep", takeover=False) is not None
    assert pretrain._claim(rt, run_id, "recovery", takeover=True) is not None
    assert _run(factory, run_id) == (PretrainingStatus.running, 3, "recovery")
