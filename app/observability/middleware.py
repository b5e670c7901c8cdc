"""Per HTTP request: a request id (kept from ``X-Request-ID`` or made), echoed in the response,
bound to every log line of the request; one access log line; the latency histogram."""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.datastructures import MutableHeaders
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.observability import context
from app.observability.metrics import REQUEST_SECONDS

HEADER = "X-Request-ID"
_HEADER_KEY = HEADER.lower().encode()
# Accept a caller's id only if it is short and plain: it lands in logs and in a header.
_VALID_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
# Probes and scrapes hit these every few seconds; their access lines go to DEBUG.
_QUIET_PATHS = {"/healthz", "/metrics"}
log = logging.getLogger("annoloop.access")


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = incoming_request_id(scope) or uuid.uuid4().hex
        token = context.bind(request_id=request_id)
        status = 500  # what the client gets if the app raises before responding
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                MutableHeaders(scope=message)[HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            route = route_template(scope)
            REQUEST_SECONDS.labels(method=method, route=route, status=str(status)).observe(elapsed)
            path: str = scope.get("path", "")
            log.log(
                logging.DEBUG if path in _QUIET_PATHS else logging.INFO,
                "%s %s %s",
                method,
                path,
                status,
                extra={
                    "method": method,
                    "path": path,
                    "route": route,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                    "client": (scope.get("client") or (None,))[0],
                },
            )
            context.unbind(token)


def incoming_request_id(scope: Scope) -> str | None:
    for key, value in scope.get("headers", []):
        if key == _HEADER_KEY:
            candidate = value.decode("latin-1").strip()
            return candidate if _VALID_ID.fullmatch(candidate) else None
    return None


def route_template(scope: Scope) -> str:
    """``/api/v1/items/{item_id}/annotations``, never the raw path: bounded label values."""
    route = scope.get("route")
    if isinstance(route, Mount):
        return f"{route.path}/{{path}}"
    # FastAPI >= 0.12x keeps included routers whole and leaves the route's own (prefix-less)
    # path in scope["route"]; the full template is on its effective route context.
    effective = (scope.get("fastapi") or {}).get("effective_route_context")
    full = getattr(effective, "path_format", None)
    if isinstance(full, str) and full:
        return full
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "<unmatched>"
