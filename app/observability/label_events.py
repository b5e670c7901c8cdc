"""Calls ``record_label`` for every annotation row once its transaction has committed.

Hooked on SQLAlchemy events rather than at each call site: every path that stores labels
(browser submit, CSV/JSON import, oracle, demo seeding) is counted, nothing is counted for a
request that rolled back, and no service has to remember to call it. The values are copied at
insert time because no SQL may run in ``after_commit``.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Mapper, Session, SessionTransaction, object_session

from app.annotations.models import Annotation
from app.observability.metrics import record_label, record_labels_imported

log = logging.getLogger(__name__)
_PENDING = "annoloop_labels_pending"
# Imports write thousands of rows: count them, but log one line per project and commit.
_BULK_SOURCES = {"import"}


@dataclass(frozen=True)
class _Stored:
    transaction: SessionTransaction | None
    project_id: int
    source: str
    annotation_id: int
    item_id: int
    annotator_id: int
    cycle_id: int | None
    idempotency_key: str | None


def _after_insert(_mapper: Mapper[Any], _connection: Any, target: Annotation) -> None:
    session = object_session(target)
    if session is None:
        return
    transaction = session.get_nested_transaction() or session.get_transaction()
    session.info.setdefault(_PENDING, []).append(
        _Stored(
            transaction=transaction,
            project_id=target.project_id,
            source=str(target.source),
            annotation_id=target.id,
            item_id=target.item_id,
            annotator_id=target.annotator_id,
            cycle_id=target.cycle_id,
            idempotency_key=target.idempotency_key,
        )
    )


def _after_commit(session: Session) -> None:
    stored: list[_Stored] = session.info.pop(_PENDING, [])
    imported: Counter[tuple[int, str]] = Counter()
    for row in stored:
        if row.source in _BULK_SOURCES:
            imported[(row.project_id, row.source)] += 1
            continue
        try:
            record_label(
                row.project_id,
                row.source,
                annotation_id=row.annotation_id,
                item_id=row.item_id,
                annotator_id=row.annotator_id,
                cycle_id=row.cycle_id,
                idempotency_key=row.idempotency_key,
            )
        except Exception:  # metrics must never turn a stored label into a failed request
            log.exception("could not record label %s", row.annotation_id)
    for (project_id, source), count in imported.items():
        record_labels_imported(project_id, source, count)


def _after_soft_rollback(session: Session, previous_transaction: SessionTransaction) -> None:
    stored: list[_Stored] = session.info.get(_PENDING, [])
    if not stored:
        return
    if previous_transaction.parent is None:
        session.info.pop(_PENDING, None)
        return
    # A savepoint rolled back: forget only the rows inserted inside it (or deeper).
    session.info[_PENDING] = [
        row for row in stored if not _within(row.transaction, previous_transaction)
    ]


def _within(transaction: SessionTransaction | None, outer: SessionTransaction) -> bool:
    while transaction is not None:
        if transaction is outer:
            return True
        transaction = transaction.parent
    return False


def install() -> None:
    """Idempotent: ``create_app`` runs many times in one test process."""
    if not event.contains(Annotation, "after_insert", _after_insert):
        event.listen(Annotation, "after_insert", _after_insert)
    if not event.contains(Session, "after_commit", _after_commit):
        event.listen(Session, "after_commit", _after_commit)
    if not event.contains(Session, "after_soft_rollback", _after_soft_rollback):
        event.listen(Session, "after_soft_rollback", _after_soft_rollback)
