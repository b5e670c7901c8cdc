"""When a failed request may be sent again, and how long to wait first.

Sent again only when the server cannot have acted on it twice:
- the connection was never made (any method);
- 429 / 503: the server refused before doing anything (any method), after ``Retry-After``;
- a lost answer or a 502/504: only for requests that are idempotent: reads, and label
  submissions, which carry an idempotency key (a resent key returns the first result).
Every other 4xx is raised at once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import httpx

REFUSED_BEFORE_WORK = frozenset({429, 503})
GATEWAY = frozenset({502, 504})


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 10.0
    max_retry_after_s: float = 30.0

    def delay(self, attempt: int, response: httpx.Response | None = None) -> float:
        if response is not None:
            after = response.headers.get("retry-after", "")
            if after.isdigit():
                return min(float(after), self.max_retry_after_s)
        base = min(self.backoff_s * 2**attempt, self.max_backoff_s)
        return base * (0.5 + random.random() / 2)  # jitter: clients retrying together spread

    def retry_status(self, status: int, idempotent: bool) -> bool:
        return status in REFUSED_BEFORE_WORK or (idempotent and status in GATEWAY)

    def retry_error(self, exc: httpx.TransportError, idempotent: bool) -> bool:
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
            return True  # nothing reached the server
        return idempotent


NO_RETRY = RetryPolicy(attempts=1)
