"""Starting, listing and cancelling pretraining runs, and finding the run a cycle starts from
(``init = "pretraining"``) or uses frozen (``backbone = "pretraining"``). The training itself
runs in the worker (``worker/pipeline/pretrain.py``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from app.auth.models import Annotator
from app.core.db import utcnow
from app.core.enums import PretrainingStatus
from app.core.errors import Conflict, NotFound, Unprocessable
from app.core.task_names import PRETRAIN
from app.core.tasks import send_after_commit
from app.items import service as items
from app.items.media import MEDIA_FLOAT32
from app.pretraining import repository
from app.pretraining.models import Pretraining
from app.pretraining.schemas import PretrainingCreate
from app.projects.models import Project
from worker.ml.spec import PRETRAINING_BACKBONE, ModelSpec

KMEANS = "patch_kmeans"


def start(
    db: Session, actor: Annotator | None, project: Project, body: PretrainingCreate
) -> Pretraining:
    spec = ModelSpec.from_dict(project.model_spec)
    params = body.settings()
    if body.method == KMEANS:
        params["model"] = _kmeans_model(db, project, spec, params)
    else:
        params["model"] = _simclr_model(spec, body.architecture)
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
            f"pretraining learns from the items of the pool: it needs at least 2, the project "
            f"has {pool}",
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
    if params["seed"] is None:
        params["seed"] = project.seed
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


def _simclr_model(spec: ModelSpec, architecture: str | None) -> dict[str, Any]:
    """The body a SimCLR run trains, recorded as its ``model`` (``ModelSpec.body_key``): the
    project's own, or for a ``pretrained`` project (which has none) the requested
    ``architecture`` at its image shape, which ``backbone: "pretraining"`` then uses."""
    if spec.name != "pretrained":
        if architecture is not None and architecture != spec.name:
            raise Unprocessable(
                f"architecture: a SimCLR run trains the project's own {spec.name} body; "
                f"{architecture!r} is only for a project whose model is pretrained",
                code="invalid_params",
                detail={"key": "architecture"},
            )
        return spec.body_key()
    if architecture is None:
        raise Unprocessable(
            "architecture: the project's model is a pretrained backbone, which has no body "
            "of its own to train; name the body SimCLR trains at its image shape "
            "(small_cnn or resnet18), or use method patch_kmeans",
            code="invalid_params",
            detail={"key": "architecture"},
        )
    try:
        body = ModelSpec.from_dict(
            {"name": architecture, "input_shape": list(spec.input_shape), "num_classes": 2}
        )
    except ValueError as exc:
        raise Unprocessable(
            f"architecture: {exc}", code="invalid_params", detail={"key": "architecture"}
        ) from exc
    return body.body_key()


def _kmeans_model(
    db: Session, project: Project, spec: ModelSpec, params: dict[str, Any]
) -> dict[str, Any]:
    """What a k-means run is fitted on, recorded as its ``model``: the project's image shape.
    It reads the items' images, whatever network the project trains on them."""
    images = spec.input is None and len(spec.input_shape) == 3
    if not images or repository.pool_items(db, project.id, MEDIA_FLOAT32):
        raise Unprocessable(
            "method: patch_kmeans fits image patches, and this project's model takes feature "
            f"vectors ({spec.name}, input_shape {list(spec.input_shape)}"
            + (f", input {spec.input!r})" if spec.input else ")"),
            code="pretraining_unsupported",
        )
    side = min(spec.input_shape[1:])
    if side < 2 * params["patch"]:
        raise Unprocessable(
            f"patch: {params['patch']}x{params['patch']} patches need images of at least "
            f"{2 * params['patch']} pixels a side; the model's are {side}",
            code="invalid_params",
            detail={"key": "patch"},
        )
    return {"name": KMEANS, "input_shape": list(spec.input_shape)}


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
    """The run a cycle of ``spec`` starts ``features`` from (``init = "pretraining"``) or uses
    as its backbone (``backbone = "pretraining"``): the latest finished run that fits, None
    when the spec uses none, 422 when none fits."""
    if spec.backbone == PRETRAINING_BACKBONE:
        return _backbone_run(db, project, spec)
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


def _backbone_run(db: Session, project: Project, spec: ModelSpec) -> Pretraining:
    """Any finished run fitted on images of the spec's shape: a k-means encoder, or a SimCLR
    body (of any architecture: it is rebuilt from the run's record). Fine-tuned
    (``frozen: false``), only a SimCLR run: a k-means encoder has no weights to train."""
    shape = list(spec.input_shape)
    fitting = [
        run
        for run in repository.finished(db, project.id)
        if (run.params.get("model") or {}).get("input_shape") == shape
    ]
    for run in fitting:
        if spec.frozen or run.params.get("method") != KMEANS:
            return run
    if fitting:
        raise Unprocessable(
            f"model_spec.hparams.frozen is false, but pretraining run {fitting[0].id} is "
            "patch_kmeans: its encoder has no weights to fine-tune; use it frozen, or start a "
            "SimCLR run",
            code="pretraining_frozen_only",
            detail={"id": fitting[0].id},
        )
    raise Unprocessable(
        "model_spec.hparams.backbone is 'pretraining' but the project has no finished "
        f"pretraining run on {shape} images; start one (POST "
        f"/api/v1/projects/{project.id}/pretraining) and wait for it",
        code="no_pretraining",
        detail={"input_shape": shape},
    )
