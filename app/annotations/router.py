from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import TypeAdapter
from sqlalchemy.orm import Session

from app.annotations import repository, service
from app.annotations.schemas import AnnotationCreate, AnnotationOut, ImportResult, ImportRow
from app.core.errors import DomainError
from app.core.ids import IdPath, IdQuery
from app.core.pagination import Page, decode_cursor, encode_cursor
from app.core.rows import ROWS_BODY, parse_rows, raw_body
from app.deps import (
    Bearer,
    BearerToken,
    DbSession,
    Engineer,
    SettingsDep,
    authenticate_request,
    in_own_session,
    limit_label_rate,
)
from app.fastpath.hot_path import HotPath
from app.projects import service as projects

router = APIRouter(tags=["annotations"])
_rows = TypeAdapter(list[ImportRow])


@router.post(
    "/items/{item_id}/annotations",
    response_model=AnnotationOut,
    status_code=201,
    responses={200: {"model": AnnotationOut, "description": "Replay of an idempotency key."}},
)
async def submit_annotation(
    item_id: IdPath,
    body: AnnotationCreate,
    request: Request,
    bearer: Bearer,
    response: Response,
) -> AnnotationOut:
    hot: HotPath | None = request.app.state.hot_path
    if hot is not None and hot.serving():
        done = await hot.submit(bearer.token, bearer.client, item_id, body)
        out, replayed = done.annotation, done.replayed
    else:
        out, replayed = await in_own_session(request, _submit, bearer, item_id, body)
    if replayed:
        response.status_code = 200
    return out


def _submit(
    db: Session, bearer: BearerToken, item_id: int, body: AnnotationCreate
) -> tuple[AnnotationOut, bool]:
    actor = authenticate_request(db, bearer)
    limit_label_rate(bearer, actor)
    item, project = projects.get_visible_item(db, actor, item_id)
    result = service.submit(db, actor, project, item, body)
    return AnnotationOut.model_validate(result.annotation), result.replayed


@router.get("/projects/{project_id}/annotations", response_model=Page[AnnotationOut])
def list_annotations(
    project_id: IdPath,
    db: DbSession,
    actor: Engineer,
    settings: SettingsDep,
    item_id: IdQuery = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1)] = 100,
) -> Page[AnnotationOut]:
    projects.get_for_engineer(db, actor, project_id)
    if limit > settings.max_page_size:
        raise DomainError(f"limit must be at most {settings.max_page_size}", code="page_too_large")
    rows = repository.page_for_project(
        db, project_id, after_id=decode_cursor(cursor), limit=limit, item_id=item_id
    )
    return Page[AnnotationOut](
        items=[AnnotationOut.model_validate(r) for r in rows],
        next_cursor=encode_cursor(rows[-1].id) if len(rows) == limit else None,
    )


@router.post(
    "/projects/{project_id}/annotations:import",
    response_model=ImportResult,
    openapi_extra=ROWS_BODY,
)
def import_annotations(
    project_id: IdPath,
    raw: Annotated[bytes, Depends(raw_body)],
    request: Request,
    db: DbSession,
    actor: Engineer,
) -> ImportResult:
    """Rows of `external_id, annotator, class_index | class_name`, as JSON or CSV."""
    project = projects.get_for_engineer(db, actor, project_id)
    rows = _parse_rows(raw, request.headers.get("content-type", ""))
    return service.import_rows(db, project, rows)


def _parse_rows(raw: bytes, content_type: str) -> list[ImportRow]:
    return parse_rows(raw, content_type, _rows, int_fields=("class_index",))
