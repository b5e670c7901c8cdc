from __future__ import annotations

from sqlalchemy import Select, bindparam, select, union
from sqlalchemy.orm import Session

from app.annotations.models import Annotation
from app.core.enums import LabelSource

# Two lookups, each by its unique index, not one OR: SQLite read every label the annotator
# ever gave to evaluate the OR (built once: every submit asks).
_OWN_LIVE = select(Annotation).where(
    Annotation.item_id == bindparam("item_id"),
    Annotation.annotator_id == bindparam("annotator_id"),
    Annotation.source == LabelSource.human,
    Annotation.retracted_at.is_(None),
)
_OWN_KEYED = select(Annotation).where(
    Annotation.annotator_id == bindparam("annotator_id"),
    Annotation.idempotency_key == bindparam("key"),
)
_OWN_LIVE_OR_KEYED = select(Annotation).from_statement(union(_OWN_LIVE, _OWN_KEYED))


def own_labels(
    db: Session, annotator_id: int, item_id: int, idempotency_key: str | None
) -> list[Annotation]:
    """The annotator's label under ``idempotency_key`` and their live human label on the
    item (at most two rows, each found by its unique index): one query per submit."""
    params = {"annotator_id": annotator_id, "item_id": item_id, "key": idempotency_key}
    stmt = _OWN_LIVE if idempotency_key is None else _OWN_LIVE_OR_KEYED
    return list(db.scalars(stmt, params))


def keyed_label(db: Session, annotator_id: int, idempotency_key: str) -> Annotation | None:
    params = {"annotator_id": annotator_id, "key": idempotency_key}
    return db.scalars(_OWN_KEYED, params).first()


def existing_keys(db: Session, annotator_ids: set[int], keys: set[str]) -> set[tuple[int, str]]:
    if not keys:
        return set()
    found: set[tuple[int, str]] = set()
    key_list = sorted(keys)
    for start in range(0, len(key_list), 500):
        stmt = select(Annotation.annotator_id, Annotation.idempotency_key).where(
            Annotation.annotator_id.in_(annotator_ids),
            Annotation.idempotency_key.in_(key_list[start : start + 500]),
        )
        found.update((a, str(k)) for a, k in db.execute(stmt))
    return found


def page_for_project(
    db: Session, project_id: int, *, after_id: int, limit: int, item_id: int | None = None
) -> list[Annotation]:
    stmt: Select[Annotation] = select(Annotation).where(
        Annotation.project_id == project_id, Annotation.id > after_id
    )
    if item_id is not None:
        stmt = stmt.where(Annotation.item_id == item_id)
    return list(db.scalars(stmt.order_by(Annotation.id).limit(limit)))


def live_votes(db: Session, item_id: int) -> list[int]:
    stmt = select(Annotation.class_index).where(
        Annotation.item_id == item_id, Annotation.retracted_at.is_(None)
    )
    return list(db.scalars(stmt))
