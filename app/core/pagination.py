"""Keyset pagination: the cursor is the last id seen, opaque to clients."""

from __future__ import annotations

import base64
import binascii
from typing import Generic, TypeVar

from pydantic import BaseModel

from app.core.errors import BadRequest, Unprocessable
from app.core.ids import MAX_ID

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, value = raw.split(":", 1)
        if prefix != "id":
            raise ValueError(prefix)
        last_id = int(value)
    except (ValueError, UnicodeDecodeError, binascii.Error) as exc:
        raise BadRequest("invalid cursor", code="bad_cursor") from exc
    # A forged cursor past the id columns' range would reach the database as a 500 (Postgres
    # ``integer``, SQLite's 64 bits), like an id in a path (``app.core.ids``).
    if not 0 <= last_id <= MAX_ID:
        raise Unprocessable("cursor out of range", code="bad_cursor")
    return last_id
