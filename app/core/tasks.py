"""Sending Celery tasks only after the transaction that created their rows has committed.

A task sent before the commit could run before its row exists (or for a row that is then
rolled back). So services call ``send_after_commit``; the session's ``after_commit`` hook
sends, and a rollback drops what was pending. If the broker is down at that moment the row
stays in the state the task would change, and ``app.cycles.reconcile`` finds it and sends
the task again (the tasks are idempotent).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import event
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)
_PENDING = "annoloop_pending_tasks"
_SENDER = "annoloop_task_sender"


class TaskSender(Protocol):
    def send(self, name: str, args: list[Any], queue: str) -> None: ...


@dataclass
class CelerySender:
    """Sends by task name, so the API process never imports the worker's (torch) code."""

    celery: Any
    # The latest tasks sent, newest last (what tests and a debugging session look at).
    # Bounded: an API process sends for as long as it runs.
    sent: deque[tuple[str, list[Any], str]] = field(default_factory=lambda: deque(maxlen=100))

    def send(self, name: str, args: list[Any], queue: str) -> None:
        self.celery.send_task(name, args=args, queue=queue)
        self.sent.append((name, args, queue))


# The API process sends after a commit, while the client waits for its answer. Celery's
# defaults retry a down Redis result store 20 times a second apart, which held a label
# submitted during a broker outage for many seconds (docs/reliability.md). A send that fails
# is not lost (``app.cycles.reconcile`` sends it again), so the API gives up within about a
# second.
_QUICK_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.25, "interval_max": 0.5}
SEND_TIMEOUT_S = 2


def bound_sends(celery: Any) -> None:
    """Make a send on ``celery`` (the API's, before first use) fail fast when the broker is
    down or unreachable."""
    transport = dict(celery.conf.broker_transport_options or {})
    if str(celery.conf.broker_url).startswith(("redis://", "rediss://")):
        transport |= {"socket_connect_timeout": SEND_TIMEOUT_S, "socket_timeout": SEND_TIMEOUT_S}
    celery.conf.update(
        broker_connection_timeout=SEND_TIMEOUT_S,
        broker_transport_options=transport,
        task_publish_retry_policy=_QUICK_RETRY,
        result_backend_transport_options={"retry_policy": _QUICK_RETRY},
        redis_socket_connect_timeout=SEND_TIMEOUT_S,
        redis_socket_timeout=SEND_TIMEOUT_S,
    )


def bind_sender(session: Session, sender: TaskSender) -> None:
    session.info[_SENDER] = sender


def send_after_commit(session: Session, name: str, args: list[Any], queue: str) -> None:
    if _SENDER not in session.info:
        raise RuntimeError("no task sender bound to this session")
    session.info.setdefault(_PENDING, []).append((name, args, queue))


@event.listens_for(Session, "after_commit")
def _send_pending(session: Session) -> None:
    pending = session.info.pop(_PENDING, [])
    sender: TaskSender | None = session.info.get(_SENDER)
    for name, args, queue in pending:
        try:
            assert sender is not None
            sender.send(name, args, queue)
        except Exception:
            # The row is committed; the API's sweep re-sends it (app.cycles.reconcile).
            log.exception("could not send task %s%s to queue %s", name, tuple(args), queue)


@event.listens_for(Session, "after_soft_rollback")
def _drop_pending(session: Session, previous_transaction: Any) -> None:
    if previous_transaction.parent is None:
        session.info.pop(_PENDING, None)
