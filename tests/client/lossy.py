"""Lost answers on a real connection: the request reaches the real server and is handled
there, then the client is told the connection broke (as when a proxy or a network drops
the response)."""

from __future__ import annotations

from collections.abc import Callable

import httpx


class LoseAnswers(httpx.BaseTransport):
    def __init__(self, lose: Callable[[httpx.Request], bool], times: int = 1) -> None:
        self.inner = httpx.HTTPTransport()
        self.lose, self.left = lose, times
        self.sent: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        self.sent.append(f"{request.method} {request.url.path}")
        if self.left > 0 and self.lose(request):
            self.left -= 1
            response.read()
            response.close()
            raise httpx.ReadError("connection reset while reading the answer", request=request)
        return response

    def close(self) -> None:
        self.inner.close()


class AsyncLoseAnswers(httpx.AsyncBaseTransport):
    def __init__(self, lose: Callable[[httpx.Request], bool], times: int = 1) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.lose, self.left = lose, times

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if self.left > 0 and self.lose(request):
            self.left -= 1
            await response.aread()
            await response.aclose()
            raise httpx.ReadError("connection reset while reading the answer", request=request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()
