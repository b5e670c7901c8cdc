from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core.enums import PretrainingStatus, Split
from app.cycles.models import Cycle
from app.items.models import Item
from app.pretraining.models import Pretraining
from app.projects.models import Project

ACTIVE = (PretrainingStatus.queued, PretrainingStatus.running)


def lock_project(db: Session, project_id: int) -> None:
    """Hold the project's row until the commit: two starts cannot both find none running."""
    db.execute(select(Project.id).where(Project.id == project_id).with_for_update())


def active(db: Session, project_id: int) -> Pretraining | None:
    stmt = select(Pretraining).where(
        Pretraining.project_id == project_id, Pretraining.status.in_(ACTIVE)
    )
    return db.scalar(stmt)


def for_project(db: Session, project_id: int) -> Sequence[Pretraining]:
    """Newest first."""
    stmt = (
        select(Pretraining)
        .where(Pretraining.project_id == project_id)
        .order_by(Pretraining.id.desc())
    )
    return db.scalars(stmt).all()


def finished(db: Session, project_id: int) -> Sequence[Pretraining]:
    """Finished runs with a checkpoint, newest first."""
    stmt = (
        select(Pretraining)
        .where(
            Pretraining.project_id == project_id,
            Pretraining.status == PretrainingStatus.done,
            Pretraining.checkpoint_sha256.is_not(None),
        )
        .order_by(Pretraining.id.desc())
    )
    return db.scalars(stmt).all()


def pool_items(db: Session, project_id: int, media_type: str | None = None) -> int:
    """Pool items of the project (of one payload media type, if given)."""
    stmt = (
        select(func.count())
        .select_from(Item)
        .where(Item.project_id == project_id, Item.split == Split.pool)
    )
    if media_type is not None:
        stmt = stmt.where(Item.media_type == media_type)
    return int(db.scalar(stmt) or 0)


def checkpoint_in_use(db: Session, sha256: str) -> bool:
    """Whether a run or a cycle names this checkpoint blob (names are content hashes, so two
    writers of the same bytes share one)."""
    run = select(Pretraining.id).where(Pretraining.checkpoint_sha256 == sha256).limit(1)
    cycle = select(Cycle.id).where(Cycle.pretraining_sha256 == sha256).limit(1)
    return db.scalar(run) is not None or db.scalar(cycle) is not None
