"""Every client of Redis in docker-compose.yml takes its URL from one place, so a
``REDIS_PASSWORD`` reaches the api, both workers and flower at once (issue 16, item 6): the
shipped override used to give the password to api and worker only, and flower's hard-coded
``--broker=redis://redis:6379/0`` and worker-gpu lost the broker."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from kombu import Connection

from tests.backends import REDIS_URL
from tests.deploy.compose import COMPOSE_FILE, ENV_EXAMPLE, ROOT, load, read_env_file

SENTINEL = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
CLIENTS = ("migrate", "api", "worker", "worker-gpu", "flower")


def variables(password: str | None) -> dict[str, str]:
    values = {**read_env_file(ENV_EXAMPLE), "ANNOLOOP_SECRET_KEY": "k", "POSTGRES_PASSWORD": "p"}
    if password is None:
        values.pop("REDIS_PASSWORD", None)
    else:
        values["REDIS_PASSWORD"] = password
    return values


def strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return [value] if isinstance(value, str) else []


def redis_urls(spec: dict[str, Any]) -> list[str]:
    """Every Redis URL a service is given: environment, command, healthcheck."""
    found = []
    for text in strings([spec.get("environment"), spec.get("command"), spec.get("healthcheck")]):
        found += re.findall(r"redis://\S+", text)
    return found


def test_the_redis_urls_are_written_once() -> None:
    raw = COMPOSE_FILE.read_text()
    urls = re.findall(r"redis://\S+", raw)
    assert urls == [
        "redis://:${REDIS_PASSWORD:-}@redis:6379/0",
        "redis://:${REDIS_PASSWORD:-}@redis:6379/1",
    ], "write a Redis URL only in the x-broker-url / x-result-backend anchors"
    assert "--broker" not in raw


def test_every_redis_client_gets_the_password_and_the_same_broker() -> None:
    services = load(variables(SENTINEL))["services"]
    brokers = set()
    for name in CLIENTS:
        urls = redis_urls(services[name])
        assert urls, f"{name} is given no Redis URL"
        for url in urls:
            parts = urlsplit(url)
            assert parts.password == SENTINEL, f"{name}: {url}"
            assert (parts.hostname, parts.port) == ("redis", 6379), f"{name}: {url}"
        env = services[name].get("environment") or {}
        brokers.add(env.get("ANNOLOOP_BROKER_URL") or env["CELERY_BROKER_URL"])
    assert len(brokers) == 1, brokers
    # Nothing else in the file talks to Redis without the password.
    for name, spec in services.items():
        for url in redis_urls(spec):
            assert urlsplit(url).password == SENTINEL, f"{name}: {url}"


def test_the_redis_server_requires_that_password_and_its_healthcheck_gives_it() -> None:
    spec = load(variables(SENTINEL))["services"]["redis"]
    command = spec["command"]
    assert command[command.index("--requirepass") + 1] == SENTINEL
    assert spec["environment"]["REDISCLI_AUTH"] == SENTINEL
    # redis-cli exits 0 on a NOAUTH error: the check must look for the PONG.
    assert "PONG" in " ".join(spec["healthcheck"]["test"])


@pytest.mark.parametrize("password", [None, ""])
def test_without_a_password_redis_has_none(password: str | None) -> None:
    services = load(variables(password))["services"]
    command = services["redis"]["command"]
    assert command[command.index("--requirepass") + 1] == ""  # redis-server: no password
    for name in CLIENTS:
        for url in redis_urls(services[name]):
            assert url.startswith("redis://:@redis:6379/"), f"{name}: {url}"


@pytest.mark.redis
def test_an_empty_password_in_the_url_means_none_to_the_clients() -> None:
    """``redis://:@host`` (no REDIS_PASSWORD) must not send AUTH, which a Redis without a
    password answers with an error: redis-py (result backend) and kombu (broker)."""
    parts = urlsplit(REDIS_URL)
    assert parts.password is None, "the test Redis has no password"
    url = urlunsplit((parts.scheme, f":@{parts.hostname}:{parts.port or 6379}", parts.path, "", ""))
    client = redis.Redis.from_url(url)
    try:
        assert client.ping()
    finally:
        client.close()
    with Connection(url, connect_timeout=5) as conn:
        conn.ensure_connection(max_retries=1)
        assert conn.connected


def test_env_example_and_deploy_md_name_the_password() -> None:
    example = read_env_file(ENV_EXAMPLE)
    assert example["REDIS_PASSWORD"] == "", "an empty REDIS_PASSWORD ships in .env.example"
    deploy = (ROOT / "docs" / "deploy.md").read_text()
    assert "REDIS_PASSWORD" in deploy
    assert "--broker=redis://" not in deploy
