"""429 with Retry-After: label submissions per annotator, failed token checks per address.

Both limiter backends: the in-process counter (embedded broker) and Redis counters (Redis
broker, db 12 so the Celery test brokers on other dbs are untouched).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

from app.core.config import Settings
from app.core.ratelimit import MemoryLimiter, RedisLimiter
from app.main import create_app
from tests.api.helpers import add_member, create_project, upload_png
from tests.backends import REDIS_URL
from tests.conftest import BOTH_DB_MODES, Accounts

REDIS_DB12 = REDIS_URL.rsplit("/", 1)[0] + "/12"


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def limited_client(
    request: pytest.FixtureRequest,
    settings: Settings,
    migrated_engine: Engine,
    factory: sessionmaker[Session],
    connection: Connection | None,
) -> Iterator[TestClient]:
    update: dict[str, object] = {
        "rate_limit_labels_per_minute": 3,
        "rate_limit_auth_failures_per_minute": 2,
    }
    if request.param == "redis":
        redis.Redis.from_url(REDIS_DB12).flushdb()
        update |= {"broker_url": REDIS_DB12, "result_backend": REDIS_DB12}
    own = None if connection is None else factory  # committed mode: the hot path
    app = create_app(
        settings.model_copy(update=update), engine=migrated_engine, session_factory=own
    )
    limiter = MemoryLimiter if request.param == "memory" else RedisLimiter
    assert isinstance(app.state.rate_limiter, limiter)
    # The counters are per clock minute: a test that crossed a minute saw its count start
    # again (a flaky 401 where a 429 was due). Frozen in the middle of one, none can.
    frozen = (time.time() // 60) * 60 + 30
    app.state.rate_limiter.clock = lambda: frozen
    hot = getattr(app.state, "hot_path", None)
    if hot is not None and hasattr(hot.limiter, "clock"):
        hot.limiter.clock = lambda: frozen
    with TestClient(app) as client:
        yield client
    if request.param == "redis":
        redis.Redis.from_url(REDIS_DB12).flushdb()


def _retry_after(r: object) -> int:
    value = int(r.headers["Retry-After"])  # type: ignore[attr-defined]
    assert 1 <= value <= 60
    return value


@BOTH_DB_MODES
def test_label_submissions_are_limited_per_annotator(
    limited_client: TestClient, accounts: Accounts
) -> None:
    pid = create_project(limited_client, accounts)["id"]
    add_member(limited_client, accounts, pid, "annotator")
    item = upload_png(limited_client, accounts, pid)["id"]
    url = f"/api/v1/items/{item}/annotations"
    for _ in range(3):  # every submission counts, accepted or not (no lease here: 409)
        r = limited_client.post(url, json={"class_index": 0}, headers=accounts.h("annotator"))
        assert r.status_code == 409, r.text
    r = limited_client.post(url, json={"class_index": 0}, headers=accounts.h("annotator"))
    assert r.status_code == 429, r.text
    assert r.json()["error"]["code"] == "rate_limited"
    assert r.json()["error"]["detail"]["retry_after"] == _retry_after(r)
    # Someone else's budget is their own.
    r = limited_client.post(url, json={"class_index": 0}, headers=accounts.h("engineer"))
    assert r.status_code == 409, r.text


@BOTH_DB_MODES
def test_failed_token_checks_block_guesses_not_valid_tokens(
    limited_client: TestClient, accounts: Accounts
) -> None:
    bad = {"Authorization": "Bearer al_not-a-real-token"}
    assert limited_client.get("/api/v1/me").status_code == 401  # no token: not a guess
    for _ in range(2):
        assert limited_client.get("/api/v1/me", headers=bad).status_code == 401
    r = limited_client.get("/api/v1/me", headers=bad)
    assert r.status_code == 429
    _retry_after(r)
    # Someone else's valid token from the same address (behind the same proxy) still
    # passes, on the ORM routes and on the annotator's hot path (committed mode, Postgres),
    # while the guesses go on being refused.
    assert limited_client.get("/api/v1/me", headers=accounts.h("admin")).status_code == 200
    pid = create_project(limited_client, accounts)["id"]
    add_member(limited_client, accounts, pid, "annotator")
    upload_png(limited_client, accounts, pid)
    nxt = f"/api/v1/projects/{pid}/next"
    r = limited_client.get(nxt, headers=accounts.h("annotator"))
    assert r.status_code == 200, r.text
    assert limited_client.get(nxt, headers=bad).status_code == 429
    r = limited_client.post("/api/v1/items/1/annotations", json={"class_index": 0}, headers=bad)
    assert r.status_code == 429


def test_windows_reset() -> None:
    now = [119.5]
    limiter = MemoryLimiter(clock=lambda: now[0])
    assert [limiter.hit("k") for _ in range(3)] == [1, 2, 3]
    assert limiter.retry_after() == 1  # ceil(120 - 119.5)
    now[0] = 120.0
    assert limiter.count("k") == 0
    assert limiter.retry_after() == 60


@pytest.mark.redis
def test_redis_limiter_counts_across_instances() -> None:
    redis.Redis.from_url(REDIS_DB12).flushdb()
    a, b = RedisLimiter(REDIS_DB12), RedisLimiter(REDIS_DB12)  # two API processes
    assert a.hit("k") == 1
    assert b.hit("k") == 2
    assert a.count("k") == 2
    redis.Redis.from_url(REDIS_DB12).flushdb()
