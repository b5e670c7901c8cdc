from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.core.ids import IdPath
from app.cycles import repository, scores, service
from app.cycles.schemas import CycleCreate, CycleOut, QueueEntryOut, ScoreHistogram
from app.deps import Blobs, CurrentUser, DbSession, Engineer
from app.projects import service as projects

router = APIRouter(prefix="/projects/{project_id}/cycles", tags=["cycles"])


@router.post("", response_model=CycleOut, status_code=202)
def start_cycle(project_id: IdPath, body: CycleCreate, db: DbSession, actor: Engineer) -> CycleOut:
    project = projects.get_for_engineer(db, actor, project_id)
    return CycleOut.model_validate(service.start(db, actor, project, body))


@router.get("", response_model=list[CycleOut])
def list_cycles(project_id: IdPath, db: DbSession, actor: CurrentUser) -> list[CycleOut]:
    projects.get_visible(db, actor, project_id)
    return [CycleOut.model_validate(c) for c in repository.for_project(db, project_id)]


@router.get("/{cycle_id}", response_model=CycleOut)
def get_cycle(project_id: IdPath, cycle_id: IdPath, db: DbSession, actor: CurrentUser) -> CycleOut:
    project = projects.get_visible(db, actor, project_id)
    return CycleOut.model_validate(service.get(db, project, cycle_id))


@router.post("/{cycle_id}/retry", response_model=CycleOut, status_code=202)
def retry_cycle(project_id: IdPath, cycle_id: IdPath, db: DbSession, actor: Engineer) -> CycleOut:
    project = projects.get_for_engineer(db, actor, project_id)
    return CycleOut.model_validate(service.retry(db, service.get(db, project, cycle_id)))


@router.post("/{cycle_id}/cancel", response_model=CycleOut)
def cancel_cycle(project_id: IdPath, cycle_id: IdPath, db: DbSession, actor: Engineer) -> CycleOut:
    project = projects.get_for_engineer(db, actor, project_id)
    return CycleOut.model_validate(service.cancel(db, service.get(db, project, cycle_id)))


@router.get("/{cycle_id}/queue", response_model=list[QueueEntryOut])
def cycle_queue(
    project_id: IdPath, cycle_id: IdPath, db: DbSession, actor: Engineer
) -> list[QueueEntryOut]:
    project = projects.get_for_engineer(db, actor, project_id)
    cycle = service.get(db, project, cycle_id)
    return [QueueEntryOut.model_validate(e) for e in repository.queue_of(db, cycle.id)]


@router.get("/{cycle_id}/scores", response_model=ScoreHistogram)
def cycle_scores(
    project_id: IdPath,
    cycle_id: IdPath,
    db: DbSession,
    actor: Engineer,
    blobs: Blobs,
    bins: Annotated[int, Query(ge=1, le=200)] = 30,
) -> ScoreHistogram:
    """Histogram of the acquisition scores over the pool this cycle scored."""
    project = projects.get_for_engineer(db, actor, project_id)
    return scores.histogram(blobs, service.get(db, project, cycle_id), bins)
