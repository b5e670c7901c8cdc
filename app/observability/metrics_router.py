"""``GET /metrics``: this process's metrics plus the scrape-time database gauges."""

from __future__ import annotations

import hmac
from collections.abc import Iterator

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import Metric

from app.core.errors import Forbidden, Unauthorized

router = APIRouter(tags=["operations"])


class _Exposition:
    """The process-wide registry (latency, labels counter) followed by the app's own one (the
    database collector, registered per app so that tests can build many apps)."""

    def __init__(self, app_registry: CollectorRegistry) -> None:
        self.app_registry = app_registry

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()
        yield from self.app_registry.collect()


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    token: str | None = request.app.state.metrics_token
    if token is None and request.app.state.settings.environment == "production":
        # Open metrics name projects and label rates to anyone who can reach the port; a
        # production server without a token answers 403 (and still starts: /healthz and the
        # API must not depend on the scrape setup).
        raise Forbidden(
            "/metrics is off in production until ANNOLOOP_METRICS_TOKEN is set",
            code="metrics_token_unset",
        )
    if token is not None:
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise Unauthorized("/metrics needs the metrics bearer token")
    body = generate_latest(_Exposition(request.app.state.metrics_registry))
    return Response(body, media_type=CONTENT_TYPE_LATEST)
