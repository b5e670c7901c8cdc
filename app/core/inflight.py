"""Bound the requests one API process works on at once, well below its thread pool's size.

A request's sync dependencies and its endpoint run as separate hops on anyio's thread pool
(40 threads), and the database transaction opened in the first hop stays open across the
others. With more requests in flight than threads, every thread can end up blocked on a
lock or a pooled connection held by a request that is waiting for a thread for its next
hop: nothing moves until a 30 s timeout fires (seen at 50 clients on SQLite, where
``BEGIN IMMEDIATE`` is one lock for everyone, as 30 s stalls and 500s).

Past the bound, requests wait here, in the event loop, holding nothing. A request with a
body takes its slot only once the body has arrived, so slow uploads do not hold slots
(FastAPI reads the body before it runs any dependency), and a request gives its slot back
when its response starts, so slow downloads hold none either: whatever a route streams
must therefore be read from the database before it returns. The bound is small
because one process is bound by its GIL: a request costs a few ms of Python, so a handful
in flight keep it busy, and more only queue on threads and row locks instead. Every extra
thread in flight waits for the GIL after each SQL round trip, and a transaction waiting
there keeps its row locks: the project row (the budget counter) that every submit updates.
The default, 4, and the runs that chose it (``scripts/bench_load.py``, on both databases
and on the Postgres hot path): docs/reliability.md.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_IN_FLIGHT = 4
# Probes answer at once whatever the load: a health check stuck behind slow uploads would
# get a busy API restarted.
UNLIMITED_PATHS = frozenset({"/healthz", "/metrics"})


class InFlightLimit:
    def __init__(self, app: ASGIApp, limit: int = MAX_IN_FLIGHT) -> None:
        self.app = app
        self.limit = limit
        self._slots: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _semaphore(self) -> asyncio.Semaphore:
        # One per event loop (tests run one app under several), made inside that loop.
        loop = asyncio.get_running_loop()
        if self._slots is None or self._loop is not loop:
            self._slots = asyncio.Semaphore(self.limit)
            self._loop = loop
        return self._slots

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in UNLIMITED_PATHS:
            await self.app(scope, receive, send)
            return
        slots = self._semaphore()
        held = answered = False

        async def take() -> None:
            nonlocal held
            if not held and not answered:
                await slots.acquire()
                held = True

        def give_back() -> None:
            nonlocal held
            if held:
                held = False
                slots.release()

        async def receive_then_take() -> Message:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                await take()
            return message

        async def send_outside_bound(message: Message) -> None:
            # The response's head is the end of the work the bound is for: the request's
            # session (scope="function") has committed and closed, and a streamed body is
            # built from what it read. Sending is the client's pace: a client that reads
            # slowly or never (its send waits on uvicorn's write buffer) must not keep a
            # slot that labelling requests wait for (issue 15: four stalled image
            # downloads stopped the API). app.core.send_timeout drops such clients.
            nonlocal answered
            if message["type"] == "http.response.start":
                answered = True
                give_back()
            await send(message)

        try:
            if scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS") or not _has_body(scope):
                await take()
                await self.app(scope, receive, send_outside_bound)
            else:
                await self.app(scope, receive_then_take, send_outside_bound)
        finally:
            give_back()


def _has_body(scope: Scope) -> bool:
    """A body is coming, so the app will read it (a bodiless POST may never call receive)."""
    headers = dict(scope.get("headers") or [])
    if b"transfer-encoding" in headers:
        return True
    return headers.get(b"content-length", b"0").strip() not in (b"", b"0")
