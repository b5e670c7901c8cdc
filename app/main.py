"""The FastAPI application: routers under ``/api/v1``, health, the frontend's static files."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import Scope

import app.db_models  # noqa: F401  (registers every mapper before the first query)
from app import errors_http
from app.annotations.router import router as annotations_router
from app.auth.router import router as auth_router
from app.core.blobs import open_blob_store
from app.core.config import Settings, get_settings
from app.core.db import make_engine, make_session_factory
from app.core.errors import ERROR_RESPONSES
from app.core.inflight import InFlightLimit
from app.core.limits import BodySizeLimit
from app.core.ratelimit import make_limiter
from app.core.security_headers import SecurityHeaders
from app.core.tasks import CelerySender, TaskSender, bound_sends
from app.core.text_input import RefuseNul
from app.cycles.reconcile import make_sweep
from app.cycles.router import router as cycles_router
from app.cycles.strategy_router import router as strategies_router
from app.docs_page import install_docs
from app.fastpath.hot_path import make_hot_path
from app.gold.router import router as gold_router
from app.health.router import router as health_router
from app.items.router import router as items_router
from app.observability.install import install_observability
from app.pretraining.router import router as pretraining_router
from app.projects.router import router as projects_router
from app.queue.router import router as queue_router
from app.reports.people_stats import PeopleStatsStore
from app.reports.router import router as reports_router
from app.webhooks.delivery import make_delivery_thread
from app.webhooks.router import router as webhooks_router

API_PREFIX = "/api/v1"
FRONTEND_DIR = Path(__file__).resolve().parent.parent / "frontend"
log = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None,
    *,
    engine: Engine | None = None,
    session_factory: sessionmaker[Session] | None = None,
    task_sender: TaskSender | None = None,
) -> FastAPI:
    settings = settings or get_settings()
    settings.ensure_dirs()
    from worker.celery_app import create_celery  # no torch: the worker's tasks load lazily

    celery = create_celery(settings)
    bound_sends(celery)
    engine = engine or make_engine(settings.database_url)
    # FastAPI's /docs and /redoc pages load their scripts from a CDN: /docs is served from
    # the swagger-ui-bundle package instead (app/docs_page.py), /redoc not at all.
    app = FastAPI(
        lifespan=_lifespan,
        title="annoloop",
        version="0.1.0",
        description="Deep active learning with people in the loop.",
        docs_url=None,
        redoc_url=None,
    )
    install_docs(app)
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = session_factory or make_session_factory(engine)
    app.state.blobs = open_blob_store(settings)
    app.state.celery = celery
    app.state.task_sender = task_sender or CelerySender(celery)
    app.state.rate_limiter = make_limiter(settings.broker_url)
    app.state.people_stats = PeopleStatsStore(
        app.state.session_factory, settings.progress_stats_max_age_s
    )
    # Only with sessions of its own: a test's session factory shares one connection.
    app.state.sweep = make_sweep(
        settings, app.state.session_factory, app.state.task_sender, session_factory is None
    )
    app.state.webhooks = make_delivery_thread(
        settings, app.state.session_factory, session_factory is None
    )
    app.state.hot_path = make_hot_path(
        settings,
        engine,
        app.state.rate_limiter,
        app.state.task_sender,
        own_sessions=session_factory is None,
    )

    errors_http.install(app)
    app.include_router(health_router)
    # Routes are matched in order, one by one: the annotator's two per-label routes (next,
    # submit) come first so that their requests stop matching early (FastAPI's matching was
    # a fifth of the event loop's work per label, profiled).
    for router in (
        queue_router,
        annotations_router,
        auth_router,
        projects_router,
        items_router,
        cycles_router,
        pretraining_router,
        strategies_router,
        reports_router,
        gold_router,
        webhooks_router,
    ):
        app.include_router(router, prefix=API_PREFIX, responses=ERROR_RESPONSES)
    if FRONTEND_DIR.is_dir():
        app.mount("/", StaticFiles(directory=FRONTEND_DIR, html=True), name="frontend")
    app.add_middleware(RefuseNul)  # inside BodySizeLimit: it buffers only bounded bodies
    app.add_middleware(BodySizeLimit, limit_for=_limit_for(settings))
    app.add_middleware(InFlightLimit, limit=settings.max_in_flight)
    # Outside the limits so that their own answers (413, 422, 503) carry the headers too.
    app.add_middleware(SecurityHeaders)
    install_observability(app, settings)  # last: request ids, /metrics, access log
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    background = [t for t in (app.state.sweep, app.state.webhooks) if t is not None]
    for thread in background:
        thread.start()  # one per process: each app has one lifespan
    if app.state.hot_path is not None:
        await app.state.hot_path.functions.run()  # before the first request, which it routes
    yield
    for thread in background:
        thread.stop()
    if app.state.hot_path is not None:
        await app.state.hot_path.close()


def _limit_for(settings: Settings) -> Any:
    def limit(scope: Scope) -> int:
        path: str = scope.get("path", "")
        if path.endswith(":bulk"):
            return settings.max_bulk_bytes
        if path.endswith("/items"):
            return settings.max_upload_bytes + 64 * 1024  # multipart framing
        return settings.max_json_bytes

    return limit
