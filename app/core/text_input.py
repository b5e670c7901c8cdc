"""Refuse NUL characters in request text before any route sees it.

Postgres ``text`` cannot hold U+0000: a name, key or label carrying one used to reach the
database and fail there as a 500 (on the hot path as a plain-text one), while SQLite stored
it. One rule at the edge covers every route, the hot path included: the path, the query
string and every body that is not multipart (JSON, CSV) are checked. Multipart bodies carry
binary files, so their text fields are checked where they are read (``validate_external_id``),
and a NUL that still reaches Postgres is answered 422 by ``app.errors_http``.

The cost per request is a substring search in C over bytes already held; the regular
expression runs only when the six bytes ``\\u0000`` occur at all.
"""

from __future__ import annotations

import json
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import error_body

NUL_CODE = "nul_character"
NUL_MESSAGE = "text must not contain NUL (U+0000) characters"
# A JSON escape for U+0000 that is not itself an escaped backslash followed by "u0000".
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


class RefuseNul:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        query: bytes = scope.get("query_string", b"")
        if "\x00" in scope["path"] or b"%00" in query or b"\x00" in query:
            await reject_nul(send, "the URL")
            return
        if scope["method"] in ("GET", "HEAD", "OPTIONS") or _is_multipart(scope):
            await self.app(scope, receive, send)
            return
        # Bodies that reach here are bounded by ``BodySizeLimit`` (outside this middleware)
        # and are read whole by the routes anyway.
        messages: list[Message] = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")
        if has_nul(body):
            await reject_nul(send, "the request body")
            return

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


def has_nul(body: bytes) -> bool:
    if b"\x00" in body:
        return True
    return b"\\u0000" in body and _JSON_NUL.search(body) is not None


def _is_multipart(scope: Scope) -> bool:
    for key, value in scope.get("headers", []):
        if key == b"content-type":
            return bytes(value).lower().startswith(b"multipart/")
    return False


async def reject_nul(send: Send, where: str) -> None:
    payload = json.dumps(error_body(NUL_CODE, f"{where}: {NUL_MESSAGE}")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 422,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
