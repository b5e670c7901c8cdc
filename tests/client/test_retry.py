"""Which failures the client resends (annoloop.client.retry): the decisions themselves; the
lost-answer cases run against a real server in test_client.py."""

from __future__ import annotations

import httpx
import pytest

from annoloop.client.retry import RetryPolicy

REQUEST = httpx.Request("POST", "http://x/")


@pytest.mark.parametrize(
    ("status", "idempotent", "resent"),
    [
        (429, False, True),  # refused before any work: always safe
        (503, False, True),
        (502, True, True),
        (504, True, True),
        (502, False, False),  # a gateway may have passed it on
        (500, True, False),
        (409, True, False),  # a 4xx is an answer, never retried away
        (422, True, False),
        (404, True, False),
    ],
)
def test_statuses(status: int, idempotent: bool, resent: bool) -> None:
    assert RetryPolicy().retry_status(status, idempotent) is resent


@pytest.mark.parametrize(
    ("exc", "idempotent", "resent"),
    [
        (httpx.ConnectError("refused", request=REQUEST), False, True),  # never reached it
        (httpx.ConnectTimeout("slow", request=REQUEST), False, True),
        (httpx.ReadError("reset", request=REQUEST), False, False),  # it may have acted
        (httpx.ReadTimeout("slow", request=REQUEST), False, False),
        (httpx.ReadError("reset", request=REQUEST), True, True),
        (httpx.RemoteProtocolError("closed", request=REQUEST), True, True),
    ],
)
def test_transport_errors(exc: httpx.TransportError, idempotent: bool, resent: bool) -> None:
    assert RetryPolicy().retry_error(exc, idempotent) is resent


def test_waits_follow_retry_after_capped_else_back_off() -> None:
    policy = RetryPolicy(backoff_s=1.0, max_backoff_s=4.0, max_retry_after_s=30.0)
    told = httpx.Response(429, headers={"Retry-After": "7"}, request=REQUEST)
    assert policy.delay(0, told) == 7.0
    too_long = httpx.Response(503, headers={"Retry-After": "3600"}, request=REQUEST)
    assert policy.delay(0, too_long) == 30.0
    for attempt, base in [(0, 1.0), (1, 2.0), (2, 4.0), (5, 4.0)]:
        wait = policy.delay(attempt)
        assert base / 2 <= wait <= base
