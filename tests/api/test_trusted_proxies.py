"""Whose address a failed token check counts against: ``X-Forwarded-For`` is believed only
from ``ANNOLOOP_TRUSTED_PROXIES`` (issue 15, item 6), in the app and in the uvicorn options
``annoloop api`` runs with; rotating the header from anywhere else buys no extra guesses."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from app.cli import proxy_options
from app.core.client_address import client_address
from app.core.config import Settings
from app.main import create_app
from tests.integration.processes import free_port

BAD = {"Authorization": "Bearer al_not-a-real-token"}
LIMIT = 3


def _forwarded(n: int) -> dict[str, str]:
    return {**BAD, "X-Forwarded-For": f"203.0.113.{n}"}


def test_the_rightmost_untrusted_hop_is_the_client() -> None:
    proxies = ["10.0.0.0/8", "127.0.0.1"]
    assert client_address("10.1.2.3", "198.51.100.7, 203.0.113.5, 10.9.9.9", proxies) == (
        "203.0.113.5"
    )
    assert client_address("192.0.2.1", "203.0.113.5", proxies) == "192.0.2.1"  # not our proxy
    assert client_address("127.0.0.1", "203.0.113.5", []) == "127.0.0.1"  # trust nobody
    assert client_address("10.1.2.3", None, proxies) == "10.1.2.3"
    assert client_address("10.1.2.3", "10.4.4.4", proxies) == "10.4.4.4"  # only our proxies
    assert client_address(None, "203.0.113.5", proxies) == "unknown"
    with pytest.raises(ValueError, match="TRUSTED_PROXIES"):
        Settings(environment="test", trusted_proxies="10.0.0.0/8,not-an-address")


def _app(settings: Settings, engine: Engine, proxies: str) -> object:
    update = {"rate_limit_auth_failures_per_minute": LIMIT, "trusted_proxies": proxies}
    app = create_app(settings.model_copy(update=update), engine=engine)
    # The counters are per clock minute: a test crossing one saw its count start again (a
    # 401 where a 429 was due, seen under load). Frozen mid-minute, none can.
    frozen = (time.time() // 60) * 60 + 30
    app.state.rate_limiter.clock = lambda: frozen
    hot = getattr(app.state, "hot_path", None)
    if hot is not None and hasattr(hot.limiter, "clock"):
        hot.limiter.clock = lambda: frozen
    return app


def _statuses(client: TestClient | httpx.Client, n: int, rotate: bool) -> list[int]:
    return [
        client.get("/api/v1/me", headers=_forwarded(i if rotate else 0)).status_code
        for i in range(n)
    ]


def test_a_forwarded_header_from_an_untrusted_peer_is_ignored(
    settings: Settings, migrated_engine: Engine
) -> None:
    app = _app(settings, migrated_engine, "")
    with TestClient(app, client=("127.0.0.1", 5000)) as client:  # type: ignore[arg-type]
        assert _statuses(client, LIMIT + 2, rotate=True) == [401] * LIMIT + [429] * 2


def test_a_trusted_proxy_gives_each_client_its_own_count(
    settings: Settings, migrated_engine: Engine
) -> None:
    app = _app(settings, migrated_engine, "10.0.0.0/8")
    with TestClient(app, client=("10.0.0.2", 5000)) as client:  # type: ignore[arg-type]
        assert _statuses(client, LIMIT + 2, rotate=True) == [401] * (LIMIT + 2)
        assert _statuses(client, LIMIT + 1, rotate=False)[-1] == 429  # one client: limited


@contextmanager
def _served(app: object, trusted: list[str]) -> Iterator[str]:
    """The app under uvicorn with the proxy options ``annoloop api`` passes."""
    port = free_port()
    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        host="127.0.0.1",
        port=port,
        log_level="warning",
        **proxy_options(trusted),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)


def test_uvicorn_does_not_believe_forwarded_headers_by_default(
    settings: Settings, migrated_engine: Engine
) -> None:
    # uvicorn's own default believes X-Forwarded-For from 127.0.0.1: rotating it from a local
    # process gave 40 guesses without a 429 (issue 15).
    with (
        _served(_app(settings, migrated_engine, ""), []) as url,
        httpx.Client(base_url=url) as client,
    ):
        assert _statuses(client, LIMIT + 2, rotate=True) == [401] * LIMIT + [429] * 2


def test_uvicorn_believes_a_trusted_proxy(settings: Settings, migrated_engine: Engine) -> None:
    with (
        _served(_app(settings, migrated_engine, "127.0.0.1"), ["127.0.0.1"]) as url,
        httpx.Client(base_url=url) as client,
    ):
        assert _statuses(client, LIMIT + 2, rotate=True) == [401] * (LIMIT + 2)
