"""The API's errors as exceptions, one class per status, each carrying the API's ``code``.

Every 4xx/5xx the server sends looks like ``{"error": {"code", "message", "detail"}}``; a body
that does not (a proxy's HTML page) still raises, with ``code`` ``http_<status>``.
"""

from __future__ import annotations

from typing import Any

import httpx


class AnnoloopError(Exception):
    """Base of everything the client raises on purpose."""


class ApiError(AnnoloopError):
    status: int = 0

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        detail: Any = None,
        *,
        method: str = "",
        url: str = "",
        request_id: str | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message} ({method} {url})")
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail
        self.method = method
        self.url = url
        self.request_id = request_id


class BadRequest(ApiError):
    pass


class Unauthorized(ApiError):
    pass


class Forbidden(ApiError):
    pass


class NotFound(ApiError):
    pass


class Conflict(ApiError):
    pass


class PayloadTooLarge(ApiError):
    pass


class Unprocessable(ApiError):
    pass


class RateLimited(ApiError):
    pass


class ServerError(ApiError):
    pass


class ServiceUnavailable(ServerError):
    pass


class InsufficientStorage(ServerError):
    pass


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: Unprocessable,
    429: RateLimited,
    503: ServiceUnavailable,
    507: InsufficientStorage,
}


def error_for(response: httpx.Response) -> ApiError:
    status = response.status_code
    code, message, detail = f"http_{status}", response.reason_phrase or "error", None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        code = str(err.get("code") or code)
        message = str(err.get("message") or message)
        detail = err.get("detail")
    elif response.text:
        message = response.text[:500]
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else ApiError)
    return cls(
        status,
        code,
        message,
        detail,
        method=response.request.method,
        url=str(response.request.url),
        request_id=response.headers.get("x-request-id"),
    )


class CycleEnded(AnnoloopError):
    """``wait_for`` saw the cycle stop (failed, cancelled, completed) short of the state."""

    def __init__(self, cycle: dict[str, Any], wanted: tuple[str, ...]) -> None:
        state, error = cycle.get("state"), cycle.get("error")
        super().__init__(
            f"cycle {cycle.get('id')} is {state}, waiting for {' or '.join(wanted)}"
            + (f": {error}" if error else "")
        )
        self.cycle = cycle


class WaitTimeout(AnnoloopError, TimeoutError):
    def __init__(self, cycle: dict[str, Any], wanted: tuple[str, ...], seconds: float) -> None:
        super().__init__(
            f"cycle {cycle.get('id')} still {cycle.get('state')} after {seconds:.0f} s "
            f"(waiting for {' or '.join(wanted)})"
        )
        self.cycle = cycle
