"""The receiver's side of annoloop's webhooks: check a delivery's signature and age.

    event = verify(secret, request_body, request_headers)   # raises InvalidSignature

A delivery is ``{"id", "event", "created_at", "data"}``; the same ``id`` may arrive twice
(deliveries are at least once), so act on each id once. ``X-Annoloop-Signature:
sha256=<hex>`` is the HMAC-SHA256 of ``<X-Annoloop-Timestamp>.<body>`` under the
subscription's secret: the timestamp inside the signed text keeps a captured delivery from
being replayed later as new. The server signs with ``sign`` below (app/webhooks/delivery.py).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from annoloop.client.errors import AnnoloopError


class InvalidSignature(AnnoloopError):
    pass


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(
    secret: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    tolerance_s: float = 300.0,
    now: float | None = None,
) -> dict[str, Any]:
    """The delivery's JSON if ``X-Annoloop-Signature`` matches and its timestamp is within
    ``tolerance_s`` of now (an old delivery replayed is refused); else ``InvalidSignature``."""
    lower = {k.lower(): v for k, v in headers.items()}
    stamp, given = lower.get("x-annoloop-timestamp", ""), lower.get("x-annoloop-signature", "")
    if not stamp.isdigit() or not given:
        raise InvalidSignature("no X-Annoloop-Timestamp / X-Annoloop-Signature header")
    if abs((now if now is not None else time.time()) - int(stamp)) > tolerance_s:
        raise InvalidSignature(f"timestamp {stamp} is more than {tolerance_s:.0f} s away")
    if not hmac.compare_digest(sign(secret, int(stamp), body), given):
        raise InvalidSignature("the signature does not match the body")
    return dict(json.loads(body))
