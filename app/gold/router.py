from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import TypeAdapter
from sqlalchemy import select

from app.core.ids import IdPath
from app.core.rows import ROWS_BODY, parse_rows, raw_body
from app.deps import DbSession, Engineer
from app.gold import service
from app.gold.models import GoldLabel
from app.gold.schemas import GoldImportResult, GoldOut, GoldRow
from app.projects import service as projects

router = APIRouter(tags=["gold"])
_rows = TypeAdapter(list[GoldRow])


@router.post(
    "/projects/{project_id}/gold:import",
    response_model=GoldImportResult,
    openapi_extra=ROWS_BODY,
)
def import_gold(
    project_id: IdPath,
    raw: Annotated[bytes, Depends(raw_body)],
    request: Request,
    db: DbSession,
    actor: Engineer,
) -> GoldImportResult:
    """Known truth as rows of `external_id, class_index | class_name` (JSON or CSV). Test
    items with gold are evaluated against it; pool items with gold become honeypots."""
    project = projects.get_for_engineer(db, actor, project_id)
    rows = parse_rows(
        raw, request.headers.get("content-type", ""), _rows, int_fields=("class_index",)
    )
    return service.import_gold(db, actor, project, rows)


@router.get("/projects/{project_id}/gold", response_model=list[GoldOut])
def list_gold(project_id: IdPath, db: DbSession, actor: Engineer) -> list[GoldOut]:
    projects.get_for_engineer(db, actor, project_id)
    rows = db.scalars(
        select(GoldLabel).where(GoldLabel.project_id == project_id).order_by(GoldLabel.item_id)
    )
    return [GoldOut.model_validate(g) for g in rows]
