"""Every error leaves the API as ``{"error": {"code", "message", "detail"?}}``."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.core.errors import DomainError, error_body
from app.core.text_input import NUL_CODE, NUL_MESSAGE

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "rate_limited",
}


def install(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def _domain(_: Request, exc: DomainError) -> JSONResponse:
        return JSONResponse(
            error_body(exc.code, exc.message, jsonable_encoder(exc.detail)),
            status_code=exc.status_code,
            headers=exc.headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = jsonable_encoder(exc.errors())
        for err in errors:
            err.pop("url", None)
        if any(err.get("type") == "json_invalid" for err in errors):
            return JSONResponse(
                error_body("malformed_json", "the request body is not valid JSON", errors),
                status_code=400,
            )
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        message = f"{where}: {first.get('msg', 'invalid')}" if where else "invalid request"
        return JSONResponse(error_body("invalid", message, errors), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "error")
        return JSONResponse(
            error_body(code, str(exc.detail)),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(DBAPIError)
    async def _database(_: Request, exc: DBAPIError) -> JSONResponse:
        if exc.connection_invalidated or _is_connectivity(exc):
            log.warning("database unavailable: %s", exc.orig)
            return JSONResponse(
                error_body("database_unavailable", "the database is unavailable; retry later"),
                status_code=503,
                headers={"Retry-After": "5"},
            )
        if _is_nul_refusal(exc):
            # Text that came in past ``RefuseNul`` (inside an upload) and that Postgres cannot
            # store: the client's input, not a fault of ours.
            return JSONResponse(error_body(NUL_CODE, NUL_MESSAGE), status_code=422)
        log.exception("database error")
        return JSONResponse(error_body("internal", "internal error"), status_code=500)


def _is_nul_refusal(exc: DBAPIError) -> bool:
    # psycopg refuses the parameter itself: "PostgreSQL text fields cannot contain NUL (0x00)
    # bytes"; there is no SQLSTATE to match.
    return type(exc.orig).__name__ == "DataError" and "NUL (0x00)" in str(exc.orig)


def _is_connectivity(exc: DBAPIError) -> bool:
    name = type(exc.orig).__name__
    return name in {"OperationalError", "InterfaceError"} and "locked" not in str(exc.orig)
