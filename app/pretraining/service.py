"""Starting, listing and cancelling pretraining runs, and finding the checkpoint a cycle
starts from. The training itself runs in the worker (``worker/pipeline/pretrain.py``)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.auth.models import Annotator
from app.core.db import utcnow
from app.core.enums import PretrainingStatus
from app.core.errors import Conflict, NotFound, Unprocessable
from app.core.task_names import PRETRAIN
from app.core.tasks import send_after_commit
from app.items import service as items
from app.pretraining import repository
from app.pretraining.models import Pretraining
from app.pretraining.schemas import PretrainingCreate
from app.projects.models import Project
from worker.ml.spec import ModelSpec


def start(
    db: Session, actor: Annotator | None, project: Project, body: PretrainingCreate
) -> Pretraining:
    spec = ModelSpec.from_dict(project.model_spec)
    if spec.name == "pretrained":
        raise Unprocessable(
            "the project's model is a pretrained backbone; self-supervised pretraining "
            "trains small_cnn, resnet18 or mlp bodies",
            code="pretraining_unsupported",
        )
    repository.lock_project(db, project.id)  # a concurrent start waits here
    running = repository.active(db, project.id)
    if running is not None:
        raise Conflict(
            f"pretraining run {running.id} is still {running.status.value}; wait or cancel it",
            code="pretraining_running",
            detail={"id": running.id},
        )
    pool = repository.pool_items(db, project.id)
    if pool < 2:
        raise Unprocessable(
            f"pretraining contrasts items of the pool: it needs at least 2, the project has {pool}",
            code="pool_too_small",
        )
    missing = items.missing_model_input(db, project)
    if missing:
        raise Conflict(
            f"{missing} item(s) have no feature vector {project.model_spec['input']!r}, which "
            "the model takes",
            code="features_missing",
            detail={"missing": missing},
        )
    params = body.model_dump()
    if params["seed"] is None:
        params["seed"] = project.seed
    params["model"] = spec.body_key()
    run = Pretraining(
        project_id=project.id,
        status=PretrainingStatus.queued,
        params=params,
        epochs_done=0,
        losses=[],
        created_by_id=actor.id if actor else None,
    )
    db.add(run)
    db.flush()
    send_after_commit(db, *PRETRAIN.message([run.id]))
    return run


def get(db: Session, project: Project, run_id: int) -> Pretraining:
    run = db.get(Pretraining, run_id)
    if run is None or run.project_id != project.id:
        raise NotFound(f"pretraining run {run_id} not found in project {project.id}")
    return run


def cancel(db: Session, run: Pretraining) -> Pretraining:
    """Mark the run cancelled; its worker stops after the epoch it is in (the per-epoch
    write is a compare-and-set on ``running``)."""
    db.refresh(run, with_for_update=True)
    if run.status not in repository.ACTIVE:
        raise Conflict(
            f"pretraining run {run.id} is {run.status.value}; only a queued or running one "
            "can be cancelled",
            code="invalid_state",
        )
    run.status = PretrainingStatus.cancelled
    run.finished_at = utcnow()
    db.flush()
    return run


def checkpoint_for(db: Session, project: Project, spec: ModelSpec) -> Pretraining | None:
    """The run a cycle of ``spec`` starts ``features`` from: None for ``init = "scratch"``,
    else the latest finished run whose architecture fits (422 when there is none)."""
    if spec.init != "pretraining":
        return None
    key = spec.body_key()
    for run in repository.finished(db, project.id):
        if run.params.get("model") == key:
            return run
    raise Unprocessable(
        "model_spec.hparams.init is 'pretraining' but the project has no finished "
        f"pretraining run of this architecture ({key}); start one (POST "
        f"/api/v1/projects/{project.id}/pretraining) and wait for it",
        code="no_pretraining",
        detail={"model": key},
    )
