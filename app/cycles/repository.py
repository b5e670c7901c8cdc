from __future__ import annotations

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from app.annotations.models import Annotation
from app.core.db import run_plain
from app.core.enums import QueueState, Split
from app.cycles.models import Cycle
from app.cycles.states import RUNNING
from app.items.models import Item
from app.projects.models import Project
from app.queue.models import QueueEntry


def for_project(db: Session, project_id: int) -> list[Cycle]:
    return list(
        db.scalars(select(Cycle).where(Cycle.project_id == project_id).order_by(Cycle.number))
    )


def active(db: Session, project_id: int) -> Cycle | None:
    stmt = select(Cycle).where(Cycle.project_id == project_id, Cycle.state.in_(RUNNING))
    return db.scalar(stmt)


def lock_project(db: Session, project_id: int) -> None:
    """Hold the project's row until the commit (what starting a cycle is serialised on)."""
    db.execute(select(Project.id).where(Project.id == project_id).with_for_update())


def next_number(db: Session, project_id: int) -> int:
    last = db.scalar(select(func.max(Cycle.number)).where(Cycle.project_id == project_id))
    return (last or 0) + 1


def queue_of(db: Session, cycle_id: int) -> list[QueueEntry]:
    stmt = select(QueueEntry).where(QueueEntry.cycle_id == cycle_id).order_by(QueueEntry.rank)
    return list(db.scalars(stmt))


def latest(db: Session, project_id: int) -> Cycle | None:
    stmt = select(Cycle).where(Cycle.project_id == project_id).order_by(Cycle.number.desc())
    return db.scalar(stmt.limit(1))


def get_by_id(db: Session, cycle_id: int) -> Cycle | None:
    return db.get(Cycle, cycle_id)


def strategy_of(db: Session, cycle_id: int) -> str | None:
    strategy: str | None = db.scalar(select(Cycle.strategy).where(Cycle.id == cycle_id))
    return strategy


def labelled_pool_items(db: Session, project_id: int) -> int:
    """Pool items with at least one live vote: what a cleaning cycle's folds split."""
    stmt = (
        select(func.count(func.distinct(Annotation.item_id)))
        .join(Item, Item.id == Annotation.item_id)
        .where(
            Annotation.project_id == project_id,
            Annotation.retracted_at.is_(None),
            Item.split == Split.pool,
        )
    )
    return int(db.scalar(stmt) or 0)


def open_entries(db: Session, cycle_id: int) -> int:
    stmt = select(func.count(QueueEntry.id)).where(
        QueueEntry.cycle_id == cycle_id, QueueEntry.state == QueueState.open
    )
    return int(db.scalar(stmt) or 0)


# ``cycle_id + 0`` and the ORDER BY: the first open entry through the (project, state, rank,
# id) index, never the (cycle, item) one, which reads every entry of the cycle, done ones
# too (SQLite took it, and Postgres with early statistics).
_OPEN_ENTRY = (
    select(QueueEntry.id)
    .where(
        QueueEntry.project_id == bindparam("project_id"),
        QueueEntry.state == QueueState.open,
        QueueEntry.cycle_id + 0 == bindparam("cycle_id"),
    )
    .order_by(QueueEntry.rank, QueueEntry.id)
    .limit(1)
)


def has_open_entry(db: Session, project_id: int, cycle_id: int) -> bool:
    """Whether any entry of the cycle still wants labels. Asked after every label that
    finishes an entry, so it must not count a big batch: the (project, state, rank, id) index
    yields open entries only, and the first one of this cycle answers."""
    params = {"project_id": project_id, "cycle_id": cycle_id}
    return run_plain(db, _OPEN_ENTRY, params).scalar() is not None
