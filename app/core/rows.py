"""Rows uploaded as JSON (an array of objects) or CSV (a header line), checked by pydantic."""

from __future__ import annotations

import csv
import io
import json
from typing import Any, TypeVar

from fastapi import Request
from pydantic import TypeAdapter, ValidationError

from app.core.errors import BadRequest, Unprocessable

T = TypeVar("T")

# The OpenAPI request body of a route that takes rows (it reads the raw body itself).
ROWS_BODY: dict[str, Any] = {
    "requestBody": {
        "content": {
            "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
            "text/csv": {"schema": {"type": "string"}},
        },
        "required": True,
    }
}


async def raw_body(request: Request) -> bytes:
    """The request body, read in the event loop so that the route itself can stay synchronous
    (its database work runs in a thread)."""
    return await request.body()


def parse_rows(
    raw: bytes, content_type: str, adapter: TypeAdapter[list[T]], int_fields: tuple[str, ...]
) -> list[T]:
    """The rows, or 400 ``malformed_body`` (unreadable) / 422 ``invalid_rows`` (wrong shape).
    CSV cells are strings: empty ones become None and ``int_fields`` are read as integers."""
    try:
        if content_type.startswith("text/csv"):
            reader = csv.DictReader(io.StringIO(raw.decode("utf-8-sig")))
            data: Any = [
                {k: (v if v != "" else None) for k, v in row.items() if k} for row in reader
            ]
            for row in data:
                for name in int_fields:
                    if row.get(name) is not None:
                        row[name] = int(row[name])
        else:
            data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError, csv.Error) as exc:
        raise BadRequest(f"could not parse the import body: {exc}", code="malformed_body") from exc
    try:
        return adapter.validate_python(data)
    except ValidationError as exc:
        raise Unprocessable(
            "import rows are invalid", code="invalid_rows", detail=exc.errors(include_url=False)
        ) from exc
