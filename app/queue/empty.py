"""Why ``next`` found nothing for the caller, so the page can say what happens next.

Asked only when the answer is ``queue_empty`` (both hot paths return that status alone), so
its few counting queries never slow a label down.
"""

from __future__ import annotations

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from app.annotations.models import Annotation
from app.core.enums import CycleState, ProjectKind, QueueState, Split
from app.cycles import repository as cycles
from app.cycles.models import Cycle
from app.gold.models import GoldLabel
from app.items.models import Item
from app.projects.models import Project
from app.queue.models import QueueEntry
from app.queue.schemas import NextOut

_PREPARING = (CycleState.created, CycleState.training, CycleState.scoring)


def explain(db: Session, project: Project, answer: NextOut) -> NextOut:
    if answer.status != "queue_empty":
        return answer
    waiting = int(
        db.scalar(
            select(func.count(QueueEntry.id))
            .join(Cycle, Cycle.id == QueueEntry.cycle_id)
            .where(
                QueueEntry.project_id == project.id,
                QueueEntry.state == QueueState.open,
                Cycle.state == CycleState.labeling,
            )
        )
        or 0
    )
    latest = cycles.latest(db, project.id)
    if waiting:
        reason = "others_needed"
    elif latest is not None and latest.state in _PREPARING:
        reason = "cycle_running"
    elif _pool_spent(db, project):
        reason = "pool_spent"
    else:
        reason = "no_cycle"
    return answer.model_copy(
        update={"reason": reason, "waiting_for_others": waiting if waiting else None}
    )


def _pool_spent(db: Session, project: Project) -> bool:
    """Nothing left for a cycle to queue: acquisition, no pool item without a vote or gold;
    cleaning, every voted pool item without gold already cleaned (a done entry)."""
    voted = exists().where(Annotation.item_id == Item.id, Annotation.retracted_at.is_(None))
    gold = exists().where(GoldLabel.item_id == Item.id)
    pool = select(Item.id).where(Item.project_id == project.id, Item.split == Split.pool, ~gold)
    if project.kind is ProjectKind.acquire:
        left = pool.where(~voted)
    else:
        cleaned = exists().where(QueueEntry.item_id == Item.id, QueueEntry.state == QueueState.done)
        left = pool.where(voted, ~cleaned)
    return db.scalar(select(exists(left))) is False
