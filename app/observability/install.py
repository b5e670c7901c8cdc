"""``install_observability``: the one call ``create_app`` makes to get ids, logs and metrics."""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from starlette.routing import Mount

from app.core.config import Settings
from app.observability import label_events
from app.observability.db_metrics import DatabaseCollector
from app.observability.metrics_router import router as metrics_router
from app.observability.middleware import RequestContextMiddleware
from app.observability.settings import ObservabilitySettings, get_observability_settings


def install_observability(
    app: FastAPI, settings: Settings, obs: ObservabilitySettings | None = None
) -> None:
    """Call last in ``create_app``: the middleware added last is the outermost one, so the
    request id and the latency also cover what inner middleware answers (413, ...)."""
    obs = obs or get_observability_settings()
    app.state.metrics_token = obs.metrics_token
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(app.state.session_factory))
    app.state.metrics_registry = registry
    app.include_router(metrics_router)
    _mounts_last(app)
    app.add_middleware(RequestContextMiddleware)
    label_events.install()


def _mounts_last(app: FastAPI) -> None:
    """The frontend is mounted at ``/`` and matches every path: routes added after it (like
    ``/metrics`` here) must move in front of it to be reachable."""
    routes = app.router.routes
    routes[:] = [r for r in routes if not isinstance(r, Mount)] + [
        r for r in routes if isinstance(r, Mount)
    ]
