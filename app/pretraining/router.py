from __future__ import annotations

from fastapi import APIRouter

from app.core.ids import IdPath
from app.deps import DbSession, Engineer
from app.pretraining import repository, service
from app.pretraining.schemas import PretrainingCreate, PretrainingOut
from app.projects import service as projects

router = APIRouter(prefix="/projects/{project_id}/pretraining", tags=["pretraining"])


@router.post("", response_model=PretrainingOut, status_code=202)
def start_pretraining(
    project_id: IdPath, body: PretrainingCreate, db: DbSession, actor: Engineer
) -> PretrainingOut:
    """Queue a SimCLR or patch k-means run on the project's pool (one queued or running per
    project: 409). SimCLR for a ``pretrained`` model names the body it trains
    (``architecture``)."""
    project = projects.get_for_engineer(db, actor, project_id)
    return PretrainingOut.model_validate(service.start(db, actor, project, body))


@router.get("", response_model=list[PretrainingOut])
def list_pretraining(project_id: IdPath, db: DbSession, actor: Engineer) -> list[PretrainingOut]:
    """The project's runs, newest first, with their progress (``epochs_done`` of ``epochs``)."""
    projects.get_for_engineer(db, actor, project_id)
    return [PretrainingOut.model_validate(r) for r in repository.for_project(db, project_id)]


@router.get("/{run_id}", response_model=PretrainingOut)
def get_pretraining(
    project_id: IdPath, run_id: IdPath, db: DbSession, actor: Engineer
) -> PretrainingOut:
    project = projects.get_for_engineer(db, actor, project_id)
    return PretrainingOut.model_validate(service.get(db, project, run_id))


@router.post("/{run_id}/cancel", response_model=PretrainingOut)
def cancel_pretraining(
    project_id: IdPath, run_id: IdPath, db: DbSession, actor: Engineer
) -> PretrainingOut:
    """Stop a queued or running run after its current epoch."""
    project = projects.get_for_engineer(db, actor, project_id)
    return PretrainingOut.model_validate(service.cancel(db, service.get(db, project, run_id)))
