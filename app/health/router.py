from __future__ import annotations

import logging
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import text

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    database: Literal["ok", "unavailable"]
    broker: Literal["ok", "unavailable"]
    blobs: Literal["ok", "unavailable"]
    hot_path: Literal["on", "fallback", "unchecked", "off"] = Field(
        description="Which path serves next and submit on Postgres: `on` the database "
        "functions; `fallback` the ORM, because the functions differ from the code's "
        "(`annoloop migrate` installs them; the log says which); `unchecked` the ORM until "
        "the database can be asked; `off` no hot path (SQLite, or turned off). Not part of "
        "`status`: every path gives the same answers."
    )


def _hot_path(request: Request) -> Literal["on", "fallback", "unchecked", "off"]:
    hot = request.app.state.hot_path
    return "off" if hot is None else hot.functions.state


def _database_ok(request: Request) -> bool:
    try:
        with request.app.state.session_factory() as session:
            session.execute(text("SELECT 1"))
        return True
    except Exception:
        log.warning("health: database unreachable", exc_info=True)
        return False


def _broker_ok(request: Request) -> bool:
    try:
        with request.app.state.celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return True
    except Exception:
        log.warning("health: broker unreachable", exc_info=True)
        return False


def _blobs_ok(request: Request) -> bool:
    """One HEAD of the bucket (one try, 2 s timeouts) or a look at the folder."""
    try:
        request.app.state.blobs.check()
        return True
    except Exception:
        log.warning("health: blob store unreachable", exc_info=True)
        return False


@router.get(
    "/healthz",
    response_model=Health,
    responses={503: {"model": Health, "description": "Database, broker or blobs unreachable."}},
)
def healthz(request: Request) -> JSONResponse:
    db, broker, blobs = _database_ok(request), _broker_ok(request), _blobs_ok(request)
    ok = db and broker and blobs
    body = Health(
        status="ok" if ok else "unavailable",
        database="ok" if db else "unavailable",
        broker="ok" if broker else "unavailable",
        blobs="ok" if blobs else "unavailable",
        hot_path=_hot_path(request),
    )
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)
