from __future__ import annotations

import json
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from app.annotations.aggregation import METHODS
from app.core.enums import Role
from app.core.errors import Unprocessable
from app.core.ids import IdPath
from app.deps import Blobs, CurrentUser, DbSession, Engineer
from app.projects import service as projects
from app.reports import export
from app.reports.progress import progress
from app.reports.schemas import Progress

router = APIRouter(tags=["reports"])

_MEDIA = {"csv": "text/csv", "json": "application/json", "jsonl": "application/x-ndjson"}


@router.get("/projects/{project_id}/progress", response_model=Progress)
def get_progress(
    project_id: IdPath, db: DbSession, actor: CurrentUser, request: Request
) -> Progress:
    """Budget, queue and speed. Annotators see only their own line of the per-person table."""
    project = projects.get_visible(db, actor, project_id)
    report = progress(db, project, request.app.state.people_stats.get(db, project))
    if actor.role is Role.annotator:
        report.per_annotator = [a for a in report.per_annotator if a.annotator_id == actor.id]
    return report


@router.get(
    "/projects/{project_id}/export",
    response_class=Response,
    responses={200: {"content": {m: {} for m in _MEDIA.values()}}},
)
def export_labels(
    project_id: IdPath,
    db: DbSession,
    actor: Engineer,
    blobs: Blobs,
    format: Literal["csv", "json", "jsonl"] = "jsonl",
    aggregation: str | None = None,
) -> Response:
    """Every item with votes: external id, each vote (annotator, class, source, time), the
    label the project's aggregation model derives (or ``aggregation=`` another method's) with
    its posterior and method, whether the votes tie, and for cleaning projects whether it was
    relabelled."""
    project = projects.get_for_engineer(db, actor, project_id)
    if aggregation is not None and aggregation not in METHODS:
        raise Unprocessable(
            f"unknown aggregation method {aggregation!r}; choose from {list(METHODS)}",
            code="unknown_aggregation",
        )
    # Read inside the request's transaction.
    rows = list(export.rows(db, project, blobs, aggregation))
    filename = f"annoloop-project-{project.id}.{format}"
    headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
    if format == "json":
        return Response(json.dumps(rows), media_type=_MEDIA["json"], headers=headers)
    body = export.as_csv(iter(rows)) if format == "csv" else export.as_jsonl(iter(rows))
    return StreamingResponse(body, media_type=_MEDIA[format], headers=headers)
