from __future__ import annotations

from fastapi import APIRouter

from app.auth import repository, service
from app.auth.schemas import (
    AnnotatorCreate,
    AnnotatorOut,
    AnnotatorWithToken,
    TokenCreate,
    TokenOut,
)
from app.core.enums import Role
from app.core.ids import IdPath
from app.deps import Admin, CurrentUser, DbSession, Engineer, SettingsDep

router = APIRouter(tags=["annotators"])


@router.get("/me", response_model=AnnotatorOut)
def me(user: CurrentUser) -> AnnotatorOut:
    return AnnotatorOut.model_validate(user)


@router.post("/annotators", response_model=AnnotatorWithToken, status_code=201)
def create_annotator(
    body: AnnotatorCreate, db: DbSession, actor: Engineer, settings: SettingsDep
) -> AnnotatorWithToken:
    annotator = service.create_annotator(db, actor=actor, name=body.name, role=body.role)
    token, _ = service.issue_token(db, annotator, settings.secret_key, label="initial")
    return AnnotatorWithToken(**AnnotatorOut.model_validate(annotator).model_dump(), token=token)


@router.get("/annotators", response_model=list[AnnotatorOut])
def list_annotators(db: DbSession, actor: Engineer) -> list[AnnotatorOut]:
    """Admins see every account; engineers see what ``visible_to_engineer`` allows."""
    people = (
        repository.list_annotators(db)
        if actor.role is Role.admin
        else repository.visible_to_engineer(db, actor.id)
    )
    return [AnnotatorOut.model_validate(a) for a in people]


@router.post("/annotators/{annotator_id}/tokens", response_model=TokenOut, status_code=201)
def create_token(
    annotator_id: IdPath, body: TokenCreate, db: DbSession, _actor: Admin, settings: SettingsDep
) -> TokenOut:
    annotator = service.get_annotator(db, annotator_id)
    token, record = service.issue_token(db, annotator, settings.secret_key, label=body.label)
    return TokenOut(
        id=record.id,
        prefix=record.prefix,
        label=record.label,
        created_at=record.created_at,
        token=token,
    )


@router.delete("/tokens/{token_id}", status_code=204)
def revoke_token(token_id: IdPath, db: DbSession, actor: CurrentUser) -> None:
    service.revoke_token(db, actor, token_id)
