"""Delivering the outbox to a real HTTP receiver (both databases): retries with backoff
until it answers, nothing lost while it is down, signatures a receiver can check, one
attempt per claim, a dead subscription sends nothing."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from annoloop.client.webhooks import InvalidSignature, verify
from app.core.config import Settings
from app.core.enums import ProjectKind
from app.cycles.models import Cycle
from app.projects.models import Project
from app.webhooks.delivery import Deliverer
from app.webhooks.models import Webhook, WebhookDelivery
from tests.integration.processes import free_port
from tests.webhooks.receiver import Receiver

SECRET = "s3cret-s3cret-s3cret"


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(free_port())
    yield r
    r.stop()


def _setup(factory: sessionmaker[Session], url: str, active: bool = True) -> tuple[int, int]:
    """A project with a webhook on ``url`` and one cycle created: one pending delivery."""
    with factory() as db:
        project = Project(
            name="p",
            kind=ProjectKind.acquire,
            classes=["a", "b"],
            model_spec={"name": "mlp", "input_shape": [2]},
            strategy="random",
            strategy_params={},
            batch_size=2,
        )
        db.add(project)
        db.flush()
        hook = Webhook(
            project_id=project.id,
            url=url,
            secret=SECRET,
            events=",cycle.state_changed,",
            active=active,
        )
        db.add(hook)
        db.flush()
        db.add(
            Cycle(
                project_id=project.id,
                number=1,
                kind=ProjectKind.acquire,
                strategy="random",
                params={},
                seed=0,
                batch_size=2,
            )
        )
        db.commit()
        return project.id, hook.id


def _deliverer(
    factory: sessionmaker[Session], clock: Clock, tmp_path: Path, **kw: object
) -> Deliverer:
    options: dict[str, object] = {"environment": "test", **kw}
    settings = Settings(
        data_dir=tmp_path,
        webhook_backoff_s=5.0,
        webhook_max_attempts=4,
        **options,  # type: ignore[arg-type]
    )
    return Deliverer(factory, settings, httpx.Client(timeout=5), clock)


def _row(factory: sessionmaker[Session]) -> WebhookDelivery:
    with factory() as db:
        return db.scalars(select(WebhookDelivery)).one()


def test_retries_with_backoff_until_the_receiver_answers(
    factory: sessionmaker[Session], receiver: Receiver, tmp_path: Path
) -> None:
    receiver.statuses = [500, 503]
    receiver.start()
    pid, _ = _setup(factory, receiver.url)
    clock = Clock()
    d = _deliverer(factory, clock, tmp_path)
    assert d.run_once() == 1
    first = _row(factory)
    assert (first.state, first.attempts, first.last_status) == ("pending", 1, 500)
    assert first.next_attempt_at == clock.now + timedelta(seconds=5)
    clock.advance(4.9)
    assert d.run_once() == 0  # not due yet
    clock.advance(0.1)
    assert d.run_once() == 1
    second = _row(factory)
    assert (second.attempts, second.last_status) == (2, 503)
    assert second.next_attempt_at == clock.now + timedelta(seconds=10)  # doubled
    clock.advance(10)
    assert d.run_once() == 1
    done = _row(factory)
    assert (done.state, done.attempts, done.last_status, done.last_error) == (
        "delivered",
        3,
        200,
        None,
    )
    clock.advance(3600)
    assert d.run_once() == 0  # delivered once, never again
    assert [r.status for r in receiver.got] == [500, 503, 200]
    ids = {r.headers["X-Annoloop-Delivery"] for r in receiver.got}
    assert ids == {str(done.id)}
    for r in receiver.got:
        event = verify(SECRET, r.body, r.headers)
        assert event["event"] == "cycle.state_changed"
        assert event["data"]["project_id"] == pid
        assert event["data"]["to"] == "created"
        with pytest.raises(InvalidSignature):
            verify("another-secret-123", r.body, r.headers)
        with pytest.raises(InvalidSignature):
            verify(SECRET, r.body.replace(b"created", b"labeling"), r.headers)
        with pytest.raises(InvalidSignature):
            verify(SECRET, r.body, r.headers, now=int(r.headers["X-Annoloop-Timestamp"]) + 301)


def test_nothing_is_lost_while_the_receiver_is_down(
    factory: sessionmaker[Session], receiver: Receiver, tmp_path: Path
) -> None:
    _setup(factory, receiver.url)  # nobody listens on the port yet
    clock = Clock()
    d = _deliverer(factory, clock, tmp_path)
    assert d.run_once() == 1
    down = _row(factory)
    assert down.state == "pending"
    assert down.last_status is None
    assert "ConnectError" in (down.last_error or "")
    receiver.start()
    clock.advance(5)
    assert d.run_once() == 1
    assert _row(factory).state == "delivered"
    (got,) = receiver.accepted()
    assert json.loads(got.body)["id"] == down.id


def test_gives_up_after_the_last_attempt(
    factory: sessionmaker[Session], receiver: Receiver, tmp_path: Path
) -> None:
    receiver.statuses = [500] * 10
    receiver.start()
    _setup(factory, receiver.url)
    clock = Clock()
    d = _deliverer(factory, clock, tmp_path)
    for _ in range(6):
        d.run_once()
        clock.advance(3600)
    row = _row(factory)
    assert (row.state, row.attempts) == ("failed", 4)
    assert len(receiver.got) == 4


def test_a_claimed_delivery_is_not_sent_twice(
    factory: sessionmaker[Session], receiver: Receiver, tmp_path: Path
) -> None:
    receiver.start()
    _setup(factory, receiver.url)
    clock = Clock()
    one, two = _deliverer(factory, clock, tmp_path), _deliverer(factory, clock, tmp_path)
    claimed = one._claim(10)
    assert len(claimed) == 1
    assert two.run_once() == 0  # the other process's claim holds
    one._record(claimed[0], *one._send(claimed[0]))
    assert len(receiver.got) == 1


def test_a_subscription_removed_after_the_event_sends_nothing(
    factory: sessionmaker[Session], receiver: Receiver, tmp_path: Path
) -> None:
    receiver.start()
    _, hook_id = _setup(factory, receiver.url)
    with factory() as db:
        db.execute(update(Webhook).where(Webhook.id == hook_id).values(active=False))
        db.commit()
    _deliverer(factory, Clock(), tmp_path).run_once()
    row = _row(factory)
    assert (row.state, row.last_error) == ("failed", "the subscription was removed")
    assert receiver.got == []


def test_production_refuses_a_private_address_at_delivery_too(
    factory: sessionmaker[Session], receiver: Receiver, tmp_path: Path
) -> None:
    receiver.start()
    _setup(factory, receiver.url)  # subscribed while allowed (or the name moved since)
    prod = _deliverer(
        factory,
        Clock(),
        tmp_path,
        environment="production",
        secret_key="a-production-secret-that-is-long-enough-0123456789",
    )
    prod.run_once()
    refused = _row(factory)
    assert refused.state == "pending"
    assert "non-public address" in (refused.last_error or "")
    assert receiver.got == []
    allowed = _deliverer(
        factory,
        Clock(),
        tmp_path,
        environment="production",
        secret_key="a-production-secret-that-is-long-enough-0123456789",
        webhook_allow_private=True,
    )
    allowed.clock.advance(3600)  # type: ignore[attr-defined]
    allowed.run_once()
    assert _row(factory).state == "delivered"


def test_an_idle_sweep_does_not_wait_for_sqlites_write_lock(tmp_path: Path) -> None:
    """Nothing due: the sweep only reads, so an annotator's transaction holding SQLite's one
    write lock does not hold it up (nor does it hold the annotators up)."""
    from app.core.db import make_engine, make_session_factory
    from tests.backends import fresh_sqlite

    with fresh_sqlite(tmp_path) as url:
        engine = make_engine(url)
        try:
            with engine.connect() as writer:
                writer.exec_driver_sql("UPDATE project SET name = name")  # BEGIN IMMEDIATE
                started = time.monotonic()
                assert _deliverer(make_session_factory(engine), Clock(), tmp_path).run_once() == 0
                assert time.monotonic() - started < 5  # busy_timeout is 30 s
                writer.rollback()
        finally:
            engine.dispose()
