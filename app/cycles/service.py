"""Starting, retrying and cancelling cycles. The work itself runs in the worker."""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.auth.models import Annotator
from app.core.db import utcnow
from app.core.enums import CycleState, ProjectKind
from app.core.errors import Conflict, NotFound, Unprocessable
from app.core.task_names import RUN_CYCLE
from app.core.tasks import send_after_commit
from app.cycles import repository
from app.cycles.models import Cycle
from app.cycles.schemas import CycleCreate
from app.cycles.states import transition, transition_or_409
from app.items import service as items
from app.pretraining import service as pretraining
from app.projects.models import Project
from app.projects.schemas import check_strategy
from app.projects.service import check_fits
from app.queue import repository as queue
from worker.ml.spec import ModelSpec
from worker.ml.strategy_params import ParamsError, check_params


def start(db: Session, actor: Annotator | None, project: Project, body: CycleCreate) -> Cycle:
    strategy = body.strategy or project.strategy
    try:
        check_strategy(project.kind, strategy)
    except ValueError as exc:
        raise Unprocessable(str(exc), code="unknown_strategy") from exc
    repository.lock_project(db, project.id)  # a concurrent start or retry waits here
    running = repository.active(db, project.id)
    if running is not None:
        raise Conflict(
            f"cycle {running.number} is still {running.state.value}; wait or cancel it",
            code="cycle_running",
        )
    missing = items.missing_model_input(db, project)
    if missing:
        raise Conflict(
            f"{missing} item(s) have no feature vector {project.model_spec['input']!r}, which "
            "the model takes; upload them (POST …/features:bulk) before a cycle",
            code="features_missing",
            detail={"missing": missing},
        )
    number = repository.next_number(db, project.id)
    params = body.params if body.params is not None else dict(project.strategy_params)
    if project.kind is ProjectKind.clean:
        params = {"folds": project.crossfit_folds, "fold_seed": project.seed, **params}
    params = _checked_params(project, strategy, params)
    check_fits(project, strategy)
    # hparams.init = "pretraining": the run it starts from is fixed now, so a later run
    # cannot change what this cycle trained from (422 when none has finished).
    init = pretraining.checkpoint_for(db, project, ModelSpec.from_dict(project.model_spec))
    if project.kind is ProjectKind.clean:
        _check_folds(db, project, params["folds"])
    cycle = Cycle(
        project_id=project.id,
        number=number,
        kind=project.kind,
        state=CycleState.created,
        strategy=strategy,
        params=params,
        seed=body.seed if body.seed is not None else project.seed + number,
        batch_size=body.batch_size or project.batch_size,
        metrics={},
        timings={},
        created_by_id=actor.id if actor else None,
        pretraining_id=init.id if init else None,
        pretraining_sha256=init.checkpoint_sha256 if init else None,
    )
    db.add(cycle)
    try:
        db.flush()
    except IntegrityError as exc:  # two starts raced for the same number
        raise Conflict("another cycle was started at the same time", code="cycle_running") from exc
    send_after_commit(db, *RUN_CYCLE.message([cycle.id]))
    return cycle


def _checked_params(project: Project, strategy: str, params: object) -> dict[str, Any]:
    """The cycle's parameters by the rule the worker applies (``worker.ml.strategy_params``);
    a cleaning cycle's are its folds."""
    try:
        return check_params(project.kind.value, strategy, params)
    except ParamsError as exc:
        raise Unprocessable(
            f"params: {exc}",
            code="bad_folds" if exc.key == "folds" else "invalid_params",
            detail={"key": exc.key, "strategy": strategy},
        ) from exc


def _check_folds(db: Session, project: Project, folds: int) -> None:
    """No more folds (``params.folds``, range-checked already) than labelled items, so that
    every fold holds one."""
    labelled = repository.labelled_pool_items(db, project.id)
    if folds > labelled:
        raise Unprocessable(
            f"{folds} folds need at least {folds} labelled pool items; the project has "
            f"{labelled} (import labels first, or lower crossfit_folds)",
            code="too_many_folds",
        )


def get(db: Session, project: Project, cycle_id: int) -> Cycle:
    cycle = db.get(Cycle, cycle_id)
    if cycle is None or cycle.project_id != project.id:
        raise NotFound(f"cycle {cycle_id} not found in project {project.id}")
    return cycle


def retry(db: Session, cycle: Cycle) -> Cycle:
    """A failed cycle (or one whose task never reached the broker) goes back to the worker.
    Under the project's row lock, as the worker's start of a next cycle: two retries of two
    failed cycles cannot both find none running. Two retries of one cycle send two messages;
    the one that claims it second finds it begun by the other and does nothing
    (``worker.pipeline.transitions.claim``)."""
    repository.lock_project(db, cycle.project_id)
    running = repository.active(db, cycle.project_id)
    if running is not None and running.id != cycle.id:
        raise Conflict(f"cycle {running.number} is running", code="cycle_running")
    # Only these: ``training`` may also go back to ``created``, but only by pausing.
    transition_or_409(
        db,
        cycle,
        CycleState.created,
        action="retry",
        expect=(CycleState.created, CycleState.failed),
        error=None,
        finished_at=None,
    )
    send_after_commit(db, *RUN_CYCLE.message([cycle.id]))
    return cycle


def cancel(db: Session, cycle: Cycle) -> Cycle:
    """Cancel the cycle, its open queue entries and their live leases, so nobody is served or
    can label a cancelled item (a lease left open kept the item on an annotator's page, and a
    later cycle queuing it again made their next lease collide with it)."""
    now = utcnow()
    # The update holds the cycle's row until the commit: a worker opening the queue waits,
    # then finds the cycle cancelled and writes nothing.
    transition_or_409(db, cycle, CycleState.cancelled, action="cancel", finished_at=now)
    queue.release_open(db, cycle.id, now)
    db.flush()
    return cycle


def complete_if_labelled(db: Session, project_id: int) -> Cycle | None:
    """Close the labelling cycle whose batch is fully labelled; with ``auto_advance``, start
    the next one. Idempotent (a task runs it after the last label of a batch); returns the
    new cycle, if one was started."""
    project = db.get(Project, project_id, with_for_update=True)
    if project is None:
        return None
    current = repository.latest(db, project_id)
    if current is None or current.state is not CycleState.labeling:
        return None
    if repository.open_entries(db, current.id) > 0:
        return None
    if not transition(db, current.id, CycleState.completed, finished_at=utcnow()):
        return None
    db.refresh(current)
    # Cleaning goes on until its relabel budget is spent; acquisition only on request.
    if project.kind is ProjectKind.acquire and not project.auto_advance:
        return None
    return _start_if_budget_left(db, project)


def refresh_cleaning(db: Session, project_id: int) -> Cycle | None:
    """Start a cleaning cycle that fine-tunes the model and re-ranks, unless one is running
    or the budget is spent. Items still being relabelled carry over to the new cycle."""
    project = db.get(Project, project_id, with_for_update=True)
    if project is None or project.kind is not ProjectKind.clean:
        return None
    return _start_if_budget_left(db, project)


def _start_if_budget_left(db: Session, project: Project) -> Cycle | None:
    if project.budget is not None and project.labels_spent >= project.budget:
        return None
    if repository.active(db, project.id) is not None:
        return None
    return start(db, None, project, CycleCreate())
