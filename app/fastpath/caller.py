"""Calling the hot path's database functions: their refusals become the API's errors, and
failed token checks are counted (``app.deps.authenticate_request``)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import psycopg

from app.core.errors import (
    Conflict,
    DomainError,
    NotFound,
    Unauthorized,
    Unprocessable,
)
from app.core.ratelimit import AsyncRateLimiter, auth_failure_key, refuse_past_limit
from app.core.security import hash_token
from app.fastpath.pool import Tx

# The functions raise SQLSTATE ``AL<status>``, the error code as message, the text as detail.
_REFUSALS: dict[str, type[DomainError]] = {
    "AL401": Unauthorized,
    "AL404": NotFound,
    "AL409": Conflict,
    "AL422": Unprocessable,
}
_OWNER = "SELECT annotator_id FROM annoloop_caller(%(token_hash)s::text, now())"


class Gate:
    """Checks tokens; counts failed checks per address, and past the limit answers a failed
    check with 429 (``app.core.ratelimit.refuse_past_limit``: a valid token always passes)."""

    MAX_REMEMBERED = 10_000
    OWNER_S = 60.0  # a token's owner never changes; whether it is still valid is checked

    def __init__(self, limiter: AsyncRateLimiter, limit: int, secret: str) -> None:
        self.limiter, self.limit, self.secret = limiter, limit, secret
        self._owners: dict[str, tuple[float, int]] = {}  # token hash → (until, annotator)

    def token_hash(self, token: str) -> str:
        return hash_token(token, self.secret)

    async def call(self, tx: Tx, sql: str, params: Mapping[str, Any], client: str) -> Any:
        """The one row of a function call; a refusal raised by the function → its error."""
        try:
            row = await tx.one(sql, params)
        except psycopg.Error as exc:
            refusal = _REFUSALS.get(exc.sqlstate or "")
            if refusal is None:
                raise
            if refusal is Unauthorized and self.limit:
                failures = await self.limiter.hit(auth_failure_key(client))
                refuse_past_limit(failures, self.limit, self.limiter.retry_after)
            raise refusal(
                exc.diag.message_detail or "", code=exc.diag.message_primary or None
            ) from None
        assert row is not None
        return row

    async def owner(self, tx: Tx, token_hash: str, client: str = "unknown") -> int:
        """Whose token this is (401 unless valid), remembered for ``OWNER_S``."""
        known = self._owners.get(token_hash)
        if known is not None and known[0] > time.monotonic():
            return known[1]
        row = await self.call(tx, _OWNER, {"token_hash": token_hash}, client)
        if len(self._owners) >= self.MAX_REMEMBERED:
            self._owners.clear()
        self._owners[token_hash] = (time.monotonic() + self.OWNER_S, int(row.annotator_id))
        return int(row.annotator_id)
