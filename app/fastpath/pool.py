"""The async connection pool of the hot path, and one transaction on it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import psycopg
from psycopg.rows import namedtuple_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from sqlalchemy.engine import URL

from app.core.errors import ServiceUnavailable

T = TypeVar("T")
Params = Mapping[str, Any]
# Waiting longer for a connection than this answers 503: the database is down or the pool
# is exhausted, and the client should come back later rather than hold its request open.
CONNECT_TIMEOUT_S = 5.0


def conninfo(url: URL) -> str:
    """A libpq URI from the SQLAlchemy URL (``postgresql+psycopg://`` → ``postgresql://``)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class Tx:
    """A request's statements on its connection; rows come back as named tuples."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._conn = conn
        self.answered = False  # whether the database has answered any statement yet

    async def _run(self, sql: str, params: Params) -> psycopg.AsyncCursor[Any]:
        cursor = await self._conn.execute(sql, params)
        self.answered = True
        return cursor

    async def one(self, sql: str, params: Params) -> Any | None:
        """The first row, or None."""
        return await (await self._run(sql, params)).fetchone()

    async def all(self, sql: str, params: Params) -> list[Any]:
        return await (await self._run(sql, params)).fetchall()


class HotPool:
    """Opened on first use in the event loop that serves requests, closed at shutdown.

    One pool per event loop: asyncio connections cannot move between loops. A server has
    one loop per process; tests drive one app from several (one per test client).
    """

    def __init__(self, url: URL, max_size: int) -> None:
        self._conninfo = conninfo(url)
        self._max_size = max_size
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool: AsyncConnectionPool | None = None
        self._ready: asyncio.Task[None] | None = None

    def _make(self) -> AsyncConnectionPool:
        return AsyncConnectionPool(
            self._conninfo,
            min_size=1,
            max_size=self._max_size,
            open=False,
            timeout=CONNECT_TIMEOUT_S,
            # Autocommit: each request is one call of a function (app/fastpath/sql), which is
            # its own transaction; no BEGIN or COMMIT round trips.
            kwargs={
                "row_factory": namedtuple_row,
                "options": "-c TimeZone=UTC",
                "autocommit": True,
            },
            name="annoloop-hot-path",
        )

    async def _current(self) -> AsyncConnectionPool:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._pool is None or self._ready is None:
            # Set before the first await, so concurrent first requests share one pool.
            self._loop, self._pool = loop, self._make()
            self._ready = loop.create_task(self._pool.open())
        await self._ready
        return self._pool

    async def close(self) -> None:
        pool, loop = self._pool, self._loop
        self._loop = self._pool = self._ready = None
        if pool is not None and loop is asyncio.get_running_loop():
            await pool.close()

    async def run(self, work: Callable[[Tx], Awaitable[T]]) -> T:
        """``work`` on a pooled connection; each of its statements commits on its own.

        A connection the pool kept across a database restart fails on its first statement;
        that attempt is retried once on a fresh connection (cheaper than a ping before
        every request). ``next`` is safe to repeat (it returns the caller's lease) and so is
        a submit with an idempotency key; one without a key that the database committed
        just before it went away answers 409 ``already_labelled`` on the retry. Any other
        loss of the database is a 503.
        """
        pool = await self._current()
        for attempt in (1, 2):
            tx: Tx | None = None
            try:
                async with pool.connection() as conn:
                    tx = Tx(conn)
                    return await work(tx)
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                if attempt == 1 and tx is not None and not tx.answered:
                    continue
                raise _unavailable() from exc
            except PoolTimeout as exc:
                raise _unavailable() from exc
        raise AssertionError("unreachable")


def _unavailable() -> ServiceUnavailable:
    error = ServiceUnavailable(
        "the database is unavailable; retry later", code="database_unavailable"
    )
    error.headers = {"Retry-After": "5"}
    return error
