"""Sending Celery tasks only after the transaction that created their rows has committed.

A task sent before the commit could run before its row exists (or for a row that is then
rolled back). So services call ``send_after_commit``; the session's ``after_commit`` hook
sends, and a rollback drops what was pending. If the broker is down at that moment the row
stays in its initial state and can be re-sent (the tasks are idempotent).
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
            # The row is committed; the task can be re-sent (retry endpoint / re-dispatch).
            log.exception("could not send task %s%s to queue %s", name, tuple(args), queue)


@event.listens_for(Session, "after_soft_rollback")
def _drop_pending(session: Session, previous_transaction: Any) -> None:
    if previous_transaction.parent is None:
        session.info.pop(_PENDING, None)
