"""Domain errors carry their HTTP status; one handler turns them into JSON bodies.

Every error response has the shape ``{"error": {"code": str, "message": str, "detail": ...}}``
so clients (and the frontend) handle one format.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class DomainError(Exception):
    status_code = 400
    code = "bad_request"
    headers: dict[str, str] | None = None

    def __init__(self, message: str, *, code: str | None = None, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.detail = detail


class BadRequest(DomainError):
    status_code = 400
    code = "bad_request"


class Unauthorized(DomainError):
    status_code = 401
    code = "unauthorized"


class Forbidden(DomainError):
    status_code = 403
    code = "forbidden"


class NotFound(DomainError):
    status_code = 404
    code = "not_found"


class Conflict(DomainError):
    status_code = 409
    code = "conflict"


class PayloadTooLarge(DomainError):
    status_code = 413
    code = "too_large"


class Unprocessable(DomainError):
    status_code = 422
    code = "invalid"


class TooManyRequests(DomainError):
    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, detail={"retry_after": retry_after})
        self.headers = {"Retry-After": str(retry_after)}


class ServiceUnavailable(DomainError):
    status_code = 503
    code = "unavailable"


class InsufficientStorage(DomainError):
    status_code = 507
    code = "storage_full"


def error_body(code: str, message: str, detail: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if detail is not None:
        body["detail"] = detail
    return {"error": body}


class ErrorDetail(BaseModel):
    code: str = Field(description="Machine-readable, e.g. `not_found`, `not_leased`.")
    message: str
    detail: Any = Field(None, description="Extra data, e.g. validation errors; often absent.")


class ErrorBody(BaseModel):
    """The one error shape, documented so clients (and schema checks) know every 4xx body."""

    error: ErrorDetail


_ERROR_STATUSES = {
    400: "Malformed request (bad JSON, bad cursor, bad upload).",
    401: "Missing, unknown, revoked or expired token.",
    403: "The caller's role may not do this.",
    404: "Not found, or not visible to the caller.",
    409: "The current state refuses it (lease, budget, duplicate, cycle state).",
    413: "Request body too large.",
    415: "Unsupported media type.",
    422: "The request does not validate.",
    429: "Too many requests; see Retry-After.",
    503: "The database is unreachable; see Retry-After.",
}
# Registered on every API router (``include_router(..., responses=ERROR_RESPONSES)``).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text} for status, text in _ERROR_STATUSES.items()
}
# Only routes that write blobs can fill the disk.
STORAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    507: {"model": ErrorBody, "description": "The blob store's disk is full; nothing was stored."}
}
