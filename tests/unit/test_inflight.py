"""The in-flight bound: no more requests inside the app than the limit, and a request whose
body is still arriving holds no slot."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from app.core.inflight import InFlightLimit


class _Counting:
    def __init__(self) -> None:
        self.inside = 0
        self.most = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "POST":
            while (await receive()).get("more_body"):
                pass
        self.inside += 1
        self.most = max(self.most, self.inside)
        await asyncio.sleep(0.01)
        self.inside -= 1


def _scope(method: str, headers: list[tuple[bytes, bytes]] | None = None) -> Scope:
    return {"type": "http", "method": method, "path": "/", "headers": headers or []}


async def _noop_send(message: Message) -> None:
    pass


def _run(coro: Coroutine[Any, Any, None]) -> None:
    """``asyncio.run`` in a thread of its own: in the full suite the browser tests' Playwright
    keeps an event loop running in the main thread, where ``asyncio.run`` refuses to start."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coro).result()


def test_requests_past_the_limit_wait_outside_the_app() -> None:
    inner = _Counting()
    app = InFlightLimit(inner, limit=3)

    async def body() -> Message:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def main() -> None:
        gets = [app(_scope("GET"), body, _noop_send) for _ in range(10)]
        posts = [
            app(_scope("POST", [(b"content-length", b"2")]), body, _noop_send) for _ in range(10)
        ]
        await asyncio.gather(*gets, *posts)

    _run(main())
    assert inner.most == 3


def test_a_slow_upload_holds_no_slot() -> None:
    inner = _Counting()
    app = InFlightLimit(inner, limit=1)

    async def main() -> None:
        arrived = asyncio.Event()

        async def slow_body() -> Message:
            await arrived.wait()  # the client is still sending
            return {"type": "http.request", "body": b"x", "more_body": False}

        async def quick() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        upload = asyncio.create_task(
            app(_scope("POST", [(b"content-length", b"1")]), slow_body, _noop_send)
        )
        await asyncio.sleep(0.01)
        # The only slot is free while the upload's body is pending: this GET goes through.
        await asyncio.wait_for(app(_scope("GET"), quick, _noop_send), timeout=2)
        arrived.set()
        await upload

    _run(main())


def test_health_and_metrics_never_wait() -> None:
    inner = _Counting()
    app = InFlightLimit(inner, limit=1)

    async def run() -> None:
        async def nothing() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        busy = {**_scope("GET"), "path": "/api/v1/projects"}
        probe = {**_scope("GET"), "path": "/healthz"}
        hold = asyncio.create_task(app(busy, nothing, _noop_send))
        await asyncio.sleep(0)  # the busy request holds the only slot
        await asyncio.wait_for(app(probe, nothing, _noop_send), timeout=1)
        await hold

    _run(run())
    assert inner.most == 2  # the probe ran beside the request holding the slot


def test_a_response_the_client_does_not_read_holds_no_slot() -> None:
    """Issue 15: the slot goes back when the response starts, before the body is sent, so a
    client whose sends block (it reads nothing) leaves the bound to the others."""

    async def streams(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(3):
            await send({"type": "http.response.body", "body": b"x" * 65536, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    inner = _Counting()

    async def route(scope: Scope, receive: Receive, send: Send) -> None:
        app_for = streams if scope["path"] == "/big" else inner
        await app_for(scope, receive, send)

    app = InFlightLimit(route, limit=2)

    async def main() -> None:
        never = asyncio.Event()

        async def stuck_send(message: Message) -> None:
            if message["type"] == "http.response.body":
                await never.wait()  # the client's window is shut

        async def nothing() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        big = {**_scope("GET"), "path": "/big"}
        stuck = [asyncio.create_task(app(big, nothing, stuck_send)) for _ in range(5)]
        await asyncio.sleep(0.01)
        await asyncio.wait_for(
            asyncio.gather(*(app(_scope("GET"), nothing, _noop_send) for _ in range(4))), 1
        )
        never.set()
        await asyncio.gather(*stuck)

    _run(main())
    assert inner.most == 2
