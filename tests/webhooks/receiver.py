"""A real HTTP receiver for webhook tests: answers each POST with the next status of a
script (then 200), records what arrived, and can be started late on a reserved port (the
receiver "down" before that: connections refused)."""

from __future__ import annotations

import http.server
import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Received:
    body: bytes
    headers: dict[str, str]
    status: int


@dataclass
class Receiver:
    port: int
    statuses: list[int] = field(default_factory=list)  # answered in order, then 200
    got: list[Received] = field(default_factory=list)
    _server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> None:
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with lock:
                    status = owner.statuses.pop(0) if owner.statuses else 200
                    owner.got.append(Received(body, dict(self.headers.items()), status))
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def accepted(self) -> list[Received]:
        return [r for r in self.got if 200 <= r.status < 300]
