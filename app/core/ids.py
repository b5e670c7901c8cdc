"""Row ids as the API accepts them: positive and within a signed 64-bit integer.

Without the bound, an id like 2**64 in a path reaches the database driver and fails there
(SQLite: OverflowError, Postgres: NumericValueOutOfRange) as a 500 instead of a 422.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query
from pydantic import Field

MAX_ID = 2**63 - 1

IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]
IdQuery = Annotated[int | None, Query(ge=1, le=MAX_ID)]
IdField = Annotated[int, Field(ge=1, le=MAX_ID)]
