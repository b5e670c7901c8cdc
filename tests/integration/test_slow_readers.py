"""Clients that never read their response must not stall everyone else (issue 15, item 1).

A real uvicorn process: the stall lives in how the server's write buffer, the in-flight bound
and the response's send interact, which an in-process test client does not reproduce.
"""

from __future__ import annotations

import io
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.core.db import make_engine, make_session_factory
from app.core.processes import wait_healthy
from app.main import create_app
from tests.api.helpers import open_batch
from tests.backends import fresh_database
from tests.integration.loop import accounts, bearer, settings_for, worker_env
from tests.integration.processes import free_port, process, wait_for

pytestmark = pytest.mark.slow

SLOW_READERS = 6  # more than the default in-flight bound (4)
TCP_CLOSE, TCP_CLOSE_WAIT = 7, 8  # linux/tcp_states.h


def big_png() -> bytes:
    """About 2 MB of noise: far more than a socket's buffers hold."""
    noise = np.random.default_rng(0).integers(0, 256, (820, 820, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(noise, mode="RGB").save(out, format="PNG", compress_level=1)
    return out.getvalue()


def _stalled_readers(port: int, path: str, token: str, n: int) -> Iterator[socket.socket]:
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        # A small receive buffer, as a phone on a slow link: the server's send blocks soon.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        request = f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
        # Pipelined: each request waits behind the one before it on the same connection.
        s.sendall(request.encode() * 3)
        yield s


def test_clients_that_never_read_do_not_stall_other_requests(tmp_path: Path) -> None:
    png = big_png()
    assert len(png) > 1_500_000
    with fresh_database("sqlite", tmp_path) as db_url:
        settings = settings_for("embedded", db_url, tmp_path / "data")
        engine = make_engine(db_url)
        admin, people = accounts(engine, settings, annotators=1)
        (person_id, annotator), h = people[0], bearer(admin)
        with TestClient(create_app(settings, engine=engine)) as client:
            r = client.post(
                "/api/v1/projects",
                json={
                    "name": "slow",
                    "classes": ["a", "b"],
                    "model_spec": {"name": "small_cnn", "input_shape": [3, 32, 32]},
                },
                headers=h,
            )
            pid = r.json()["id"]
            client.post(
                f"/api/v1/projects/{pid}/members", json={"annotator_id": person_id}, headers=h
            )
            ids = []
            for k in range(3):
                r = client.post(
                    f"/api/v1/projects/{pid}/items",
                    files={"file": ("big.png", png if k == 0 else _small(k), "image/png")},
                    headers=h,
                )
                assert r.status_code == 201, r.text
                ids.append(r.json()["id"])
        open_batch(make_session_factory(engine), pid, ids[1:])
        engine.dispose()

        port = free_port()
        base = f"http://127.0.0.1:{port}/api/v1"
        log = tmp_path / "api.log"
        env = worker_env(settings, ANNOLOOP_SEND_TIMEOUT_S="2")
        with process(["api", "--port", str(port)], env, log) as api:
            wait_healthy(f"http://127.0.0.1:{port}", api, log, 60)
            readers = list(
                _stalled_readers(port, f"/api/v1/items/{ids[0]}/payload", admin, SLOW_READERS)
            )
            try:
                time.sleep(1.0)  # every slow reader's request is in and stuck sending
                with httpx.Client(timeout=10) as http:

                    def get(path: str, token: str) -> httpx.Response:
                        t0 = time.monotonic()
                        r = http.get(f"{base}{path}", headers=bearer(token))
                        took = time.monotonic() - t0
                        assert r.status_code == 200, (path, r.status_code, r.text)
                        assert took < 1.0, f"{path} took {took:.1f} s behind slow readers"
                        return r

                    get("/projects", admin)
                    leased = get(f"/projects/{pid}/next", annotator).json()["item"]["id"]
                    get(f"/items/{leased}/payload", annotator)
                    get("/projects", admin)
                # A reader that reads nothing is dropped after the send timeout (a period or
                # two: the kernel may take more of the buffer once), and the server frees
                # what it had buffered for it.
                wait_for(lambda: all(_dropped(s) for s in readers) or None, 20, "the drops", log)
            finally:
                for s in readers:
                    s.close()


def _small(k: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 32), (k, 0, 0)).save(out, format="PNG")
    return out.getvalue()


def _dropped(s: socket.socket) -> bool:
    """The server has reset or closed the connection (read from TCP_INFO, without reading
    the data, which would let the server's sends go on)."""
    state = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
    return state in (TCP_CLOSE, TCP_CLOSE_WAIT)
