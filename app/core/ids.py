"""Row ids as the API accepts them: positive and within the id columns' range.

Without the bound, an id too large for the column reaches the database and fails there
(SQLite: OverflowError, Postgres: NumericValueOutOfRange) as a 500 instead of a 422. The id
columns are ``Integer``: 64-bit on SQLite but ``integer`` (32-bit) on Postgres, so the
bound is the smaller one (the fuzzer found 20935668006 giving a 500 on Postgres).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query
from pydantic import Field

MAX_ID = 2**31 - 1

IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]
IdQuery = Annotated[int | None, Query(ge=1, le=MAX_ID)]
IdField = Annotated[int, Field(ge=1, le=MAX_ID)]
