from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from sqlalchemy.orm import Session

from app.core.ids import IdPath
from app.deps import (
    Bearer,
    BearerToken,
    CurrentUser,
    DbSession,
    SettingsDep,
    authenticate_request,
    in_own_session,
)
from app.fastpath.hot_path import HotPath
from app.projects import service as projects
from app.queue import empty, service
from app.queue.schemas import NextOut

router = APIRouter(tags=["queue"])


@router.get("/projects/{project_id}/next", response_model=NextOut)
async def next_item(
    project_id: IdPath,
    request: Request,
    bearer: Bearer,
    ahead: Annotated[
        int, Query(ge=0, le=1, description="1: also lease the item after this one (prefetch).")
    ] = 0,
) -> NextOut:
    """Lease the next queued item to the caller (or return the one they already hold).

    Not a pure read: it creates a lease. Asking again while holding one returns the same lease.
    """
    hot: HotPath | None = request.app.state.hot_path
    if hot is not None and hot.serving():
        out = await hot.next_item(bearer.token, bearer.client, project_id, ahead)
        if out.status != "queue_empty":
            return out
        return await in_own_session(request, _explain_empty, bearer, project_id, out)
    return await in_own_session(
        request, _next_item, bearer, project_id, bearer.settings.lease_seconds, ahead
    )


def _next_item(
    db: Session, bearer: BearerToken, project_id: int, lease_seconds: int, ahead: int
) -> NextOut:
    actor = authenticate_request(db, bearer)
    project = projects.get_visible(db, actor, project_id)
    return empty.explain(db, project, service.next_item(db, actor, project, lease_seconds, ahead))


def _explain_empty(db: Session, bearer: BearerToken, project_id: int, out: NextOut) -> NextOut:
    actor = authenticate_request(db, bearer)
    return empty.explain(db, projects.get_visible(db, actor, project_id), out)


@router.post("/leases/{lease_id}/skip", status_code=204)
def skip(lease_id: IdPath, db: DbSession, actor: CurrentUser) -> None:
    """Give the item back without labelling it; the caller is not offered it again."""
    service.skip(db, actor, lease_id)


@router.post("/projects/{project_id}/annotations:undo", response_model=NextOut)
def undo_last(
    project_id: IdPath, db: DbSession, actor: CurrentUser, settings: SettingsDep
) -> NextOut:
    """Retract the caller's last label in this project and lease that item back to them."""
    project = projects.get_visible(db, actor, project_id)
    return service.undo_last(db, actor, project, settings.lease_seconds)
