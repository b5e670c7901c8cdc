from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Select, exists, func, or_, select
from sqlalchemy.orm import Session

from app.annotations.models import Annotation
from app.core.enums import Split
from app.items.models import Item, ItemFeature
from app.queue.models import Lease

_CHUNK = 500  # stays under every backend's bound-parameter limit


def existing_external_ids(db: Session, project_id: int, external_ids: Iterable[str]) -> set[str]:
    wanted = list(external_ids)
    found: set[str] = set()
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        stmt = select(Item.external_id).where(
            Item.project_id == project_id, Item.external_id.in_(chunk)
        )
        found.update(db.scalars(stmt))
    return found


def _has_live_label() -> Any:
    return exists().where(Annotation.item_id == Item.id, Annotation.retracted_at.is_(None))


def page(
    db: Session,
    project_id: int,
    *,
    after_id: int,
    limit: int,
    split: Split | None = None,
    labelled: bool | None = None,
) -> list[Item]:
    stmt: Select[Item] = select(Item).where(Item.project_id == project_id, Item.id > after_id)
    if split is not None:
        stmt = stmt.where(Item.split == split)
    if labelled is not None:
        stmt = stmt.where(_has_live_label() if labelled else ~_has_live_label())
    return list(db.scalars(stmt.order_by(Item.id).limit(limit)))


def by_external_ids(db: Session, project_id: int, external_ids: list[str]) -> dict[str, Item]:
    out: dict[str, Item] = {}
    for start in range(0, len(external_ids), _CHUNK):
        chunk = external_ids[start : start + _CHUNK]
        stmt = select(Item).where(Item.project_id == project_id, Item.external_id.in_(chunk))
        out.update((item.external_id, item) for item in db.scalars(stmt))
    return out


def annotator_has_seen(db: Session, item_id: int, annotator_id: int, now: datetime) -> bool:
    """Whether the annotator holds a live lease on the item or has labelled it (an undone
    label included: they were shown the item already). Both are index lookups: the open
    leases' unique (item, annotator) index and the annotations' item index."""
    leased = exists().where(
        Lease.item_id == item_id,
        Lease.annotator_id == annotator_id,
        Lease.released_at.is_(None),
        Lease.expires_at > now,
    )
    labelled = exists().where(
        Annotation.item_id == item_id, Annotation.annotator_id == annotator_id
    )
    return bool(db.scalar(select(or_(leased, labelled))))


def features_of(db: Session, item_ids: list[int]) -> dict[tuple[int, str], ItemFeature]:
    """Every named vector of these items, by (item id, name)."""
    out: dict[tuple[int, str], ItemFeature] = {}
    ids = sorted(set(item_ids))
    for start in range(0, len(ids), _CHUNK):
        stmt = select(ItemFeature).where(ItemFeature.item_id.in_(ids[start : start + _CHUNK]))
        out.update(((f.item_id, f.name), f) for f in db.scalars(stmt))
    return out


def feature_dims(db: Session, project_id: int, names: set[str]) -> dict[str, int]:
    """The length of each named vector the project holds already."""
    stmt = (
        select(ItemFeature.name, func.min(ItemFeature.dim))
        .where(ItemFeature.project_id == project_id, ItemFeature.name.in_(sorted(names)))
        .group_by(ItemFeature.name)
    )
    return {name: int(dim) for name, dim in db.execute(stmt)}


def feature_counts(db: Session, project_id: int) -> list[tuple[str, int, dict[str, int]]]:
    """(name, length, items per split) of each vector name of the project, by name."""
    stmt = (
        select(ItemFeature.name, func.min(ItemFeature.dim), Item.split, func.count())
        .join(Item, Item.id == ItemFeature.item_id)
        .where(ItemFeature.project_id == project_id)
        .group_by(ItemFeature.name, Item.split)
        .order_by(ItemFeature.name)
    )
    out: dict[str, tuple[int, dict[str, int]]] = {}
    for name, dim, split, count in db.execute(stmt):
        out.setdefault(name, (int(dim), {}))[1][split.value] = int(count)
    return [(name, dim, counts) for name, (dim, counts) in out.items()]


def item_counts(db: Session, project_id: int) -> dict[str, int]:
    stmt = (
        select(Item.split, func.count()).where(Item.project_id == project_id).group_by(Item.split)
    )
    return {split.value: int(count) for split, count in db.execute(stmt)}


def count_without_feature(db: Session, project_id: int, name: str) -> int:
    has = exists().where(ItemFeature.item_id == Item.id, ItemFeature.name == name)
    stmt = select(func.count()).select_from(Item).where(Item.project_id == project_id, ~has)
    return int(db.scalar(stmt) or 0)
