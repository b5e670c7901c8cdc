from __future__ import annotations

from fastapi import APIRouter

from app.auth import repository as annotator_repo
from app.auth.schemas import AnnotatorOut
from app.core.ids import IdPath
from app.deps import CurrentUser, DbSession, Engineer, SettingsDep
from app.projects import repository, service
from app.projects.backbones import check_backbone
from app.projects.schemas import MemberAdd, ProjectCreate, ProjectOut, ProjectUpdate

router = APIRouter(prefix="/projects", tags=["projects"])


@router.post("", response_model=ProjectOut, status_code=201)
def create_project(
    body: ProjectCreate, db: DbSession, actor: Engineer, settings: SettingsDep
) -> ProjectOut:
    check_backbone(settings, body.model_spec.model_dump())
    return ProjectOut.model_validate(service.create(db, actor, body))


@router.get("", response_model=list[ProjectOut])
def list_projects(db: DbSession, actor: CurrentUser) -> list[ProjectOut]:
    return [ProjectOut.model_validate(p) for p in service.list_visible(db, actor)]


@router.get("/{project_id}", response_model=ProjectOut)
def get_project(project_id: IdPath, db: DbSession, actor: CurrentUser) -> ProjectOut:
    return ProjectOut.model_validate(service.get_visible(db, actor, project_id))


@router.patch("/{project_id}", response_model=ProjectOut)
def update_project(
    project_id: IdPath, body: ProjectUpdate, db: DbSession, actor: Engineer
) -> ProjectOut:
    project = service.get_for_engineer(db, actor, project_id)
    return ProjectOut.model_validate(service.update(db, project, body))


@router.get("/{project_id}/members", response_model=list[AnnotatorOut])
def list_members(project_id: IdPath, db: DbSession, actor: Engineer) -> list[AnnotatorOut]:
    service.get_for_engineer(db, actor, project_id)
    ids = repository.member_ids(db, project_id)
    return [AnnotatorOut.model_validate(a) for a in annotator_repo.list_annotators(db, ids)]


@router.post("/{project_id}/members", status_code=204)
def add_member(project_id: IdPath, body: MemberAdd, db: DbSession, actor: Engineer) -> None:
    project = service.get_for_engineer(db, actor, project_id)
    service.add_member(db, actor, project, body.annotator_id)


@router.delete("/{project_id}/members/{annotator_id}", status_code=204)
def remove_member(project_id: IdPath, annotator_id: IdPath, db: DbSession, actor: Engineer) -> None:
    service.remove_member(db, service.get_for_engineer(db, actor, project_id), annotator_id)
