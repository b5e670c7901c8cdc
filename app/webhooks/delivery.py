"""Delivering the outbox: claim due rows, POST each, record the answer.

A row is claimed by moving its ``next_attempt_at`` forward with a compare-and-set (so two
sweeping processes never send one attempt twice), sent outside any transaction (no lock is
held while a receiver takes its time), then recorded: ``delivered`` on a 2xx, otherwise
tried again after an exponential backoff until ``webhook_max_attempts``, then ``failed``
(``POST .../deliveries/{id}/retry`` re-arms it). A process that dies between claim and
record leaves the row pending: it is tried again once the claim runs out. Receivers may
therefore see a delivery twice and should key on ``X-Annoloop-Delivery``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

# One implementation of the signature for sender and receiver: the client's.
from annoloop.client.webhooks import sign as signature
from app.core.config import Settings
from app.core.db import READ_ONLY, utcnow
from app.webhooks.models import Webhook, WebhookDelivery
from app.webhooks.urls import BadWebhookUrl, check_url

log = logging.getLogger(__name__)
CLAIM_S = 120.0


@dataclass(frozen=True)
class Attempt:
    delivery_id: int
    event: str
    payload: str
    created_at: datetime
    attempts: int
    url: str
    secret: str
    active: bool


@dataclass
class Deliverer:
    factory: sessionmaker[Session]
    settings: Settings
    http: httpx.Client
    clock: Callable[[], datetime] = utcnow

    def run_once(self, limit: int = 50) -> int:
        """Deliver what is due now; returns how many attempts were made."""
        attempts = self._claim(limit)
        for attempt in attempts:
            self._record(attempt, *self._send(attempt))
        return len(attempts)

    def _claim(self, limit: int) -> list[Attempt]:
        now = self.clock()
        # Looked for on a read-only transaction first: on SQLite every other transaction
        # takes the one write lock (BEGIN IMMEDIATE), which a sweep every few seconds would
        # take from the annotators for nothing.
        with self.factory() as db:
            db.connection(execution_options={READ_ONLY: True})
            due = db.execute(
                select(WebhookDelivery.id, WebhookDelivery.next_attempt_at)
                .where(WebhookDelivery.state == "pending", WebhookDelivery.next_attempt_at <= now)
                .order_by(WebhookDelivery.id)
                .limit(limit)
            ).all()
        if not due:
            return []
        with self.factory() as db:
            mine = []
            until = now + timedelta(seconds=CLAIM_S)
            for delivery_id, seen in due:
                moved = db.execute(
                    update(WebhookDelivery)
                    .where(
                        WebhookDelivery.id == delivery_id,
                        WebhookDelivery.state == "pending",
                        WebhookDelivery.next_attempt_at == seen,
                    )
                    .values(next_attempt_at=until)
                )
                if moved.rowcount:  # type: ignore[attr-defined]
                    mine.append(delivery_id)
            rows = db.execute(
                select(WebhookDelivery, Webhook)
                .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
                .where(WebhookDelivery.id.in_(mine))
                .order_by(WebhookDelivery.id)
            ).all()
            claimed = [
                Attempt(
                    d.id, d.event, d.payload, d.created_at, d.attempts, w.url, w.secret, w.active
                )
                for d, w in rows
            ]
            db.commit()
            return claimed

    def _send(self, attempt: Attempt) -> tuple[int | None, str | None]:
        """(HTTP status, error): status 2xx and no error is a delivery."""
        if not attempt.active:
            return None, "the subscription was removed"
        try:
            check_url(attempt.url, allow_private=self._allow_private())
        except BadWebhookUrl as exc:
            return None, str(exc)
        body = json.dumps(
            {
                "id": attempt.delivery_id,
                "event": attempt.event,
                "created_at": attempt.created_at.isoformat(),
                "data": json.loads(attempt.payload),
            },
            separators=(",", ":"),
        ).encode()
        stamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "annoloop-webhooks/1",
            "X-Annoloop-Event": attempt.event,
            "X-Annoloop-Delivery": str(attempt.delivery_id),
            "X-Annoloop-Timestamp": str(stamp),
            "X-Annoloop-Signature": signature(attempt.secret, stamp, body),
        }
        try:
            response = self.http.post(attempt.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"[:500]
        if 200 <= response.status_code < 300:
            return response.status_code, None
        return response.status_code, f"HTTP {response.status_code}: {response.text[:200]}"

    def _allow_private(self) -> bool:
        return self.settings.webhook_allow_private or self.settings.environment != "production"

    def _record(self, attempt: Attempt, status: int | None, error: str | None) -> None:
        now = self.clock()
        tries = attempt.attempts + 1
        values: dict[str, object] = {"attempts": tries, "last_status": status, "last_error": error}
        if error is None:
            values |= {"state": "delivered", "delivered_at": now}
        elif tries >= self.settings.webhook_max_attempts or not attempt.active:
            values |= {"state": "failed"}
        else:
            backoff = self.settings.webhook_backoff_s * 2 ** (tries - 1)
            values |= {
                "next_attempt_at": now
                + timedelta(seconds=min(backoff, self.settings.webhook_backoff_max_s))
            }
        if error is not None:
            log.warning(
                "webhook delivery %s (%s) attempt %d: %s",
                attempt.delivery_id,
                attempt.event,
                tries,
                error,
            )
        with self.factory() as db:
            db.execute(
                update(WebhookDelivery)
                .where(
                    WebhookDelivery.id == attempt.delivery_id, WebhookDelivery.state == "pending"
                )
                .values(**values)
            )
            db.commit()


class DeliveryThread:
    """``Deliverer.run_once`` every ``interval_s`` on a daemon thread (the API's lifespan)."""

    def __init__(self, deliverer: Deliverer, interval_s: float) -> None:
        self.deliverer, self.interval_s = deliverer, interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="webhooks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.deliverer.http.close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                while self.deliverer.run_once() and not self._stop.is_set():
                    pass
            except Exception:  # the database may be down: try again next time
                log.exception("webhook delivery sweep failed")


def make_delivery_thread(
    settings: Settings, factory: sessionmaker[Session], own_sessions: bool
) -> DeliveryThread | None:
    if not own_sessions or settings.webhook_interval_s <= 0:
        return None
    http = httpx.Client(timeout=settings.webhook_timeout_s, follow_redirects=False)
    return DeliveryThread(Deliverer(factory, settings, http), settings.webhook_interval_s)
