"""Which task message may take over work that another message has begun.

A cycle's ``run`` task and a pretraining run's task record the Celery id of the message that
claimed the row (``claimed_by``). Celery keeps that id when the broker redelivers a message
whose worker died before the ack, so "same id" means "the same message, whose first worker is
gone", while any other id is a second copy (a double retry, the sweep's re-send, a late
original) whose first copy may still be running.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, or_
from sqlalchemy.orm import InstrumentedAttribute


def may_take_over(
    waiting: ColumnElement[bool],
    claimed_by: InstrumentedAttribute[str | None],
    task_id: str | None,
) -> ColumnElement[bool]:
    """The guard under which message ``task_id`` claims a row: it is ``waiting`` (nobody
    claimed it), or it was claimed by this same message, or by none that recorded an id (a
    row claimed before ids were recorded, or an in-process run without a message: any
    message may take it over, as all could before)."""
    same = claimed_by.is_(None) if task_id is None else claimed_by == task_id
    return or_(waiting, claimed_by.is_(None), same)
