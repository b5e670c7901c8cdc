from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.gold.models import GoldLabel


def for_items(db: Session, item_ids: list[int]) -> dict[int, GoldLabel]:
    out: dict[int, GoldLabel] = {}
    for start in range(0, len(item_ids), 500):
        chunk = item_ids[start : start + 500]
        out.update(
            (g.item_id, g)
            for g in db.scalars(select(GoldLabel).where(GoldLabel.item_id.in_(chunk)))
        )
    return out


def of_project(db: Session, project_id: int) -> dict[int, int]:
    """item id -> gold class of every gold label of the project."""
    rows = db.execute(
        select(GoldLabel.item_id, GoldLabel.class_index).where(GoldLabel.project_id == project_id)
    )
    return {int(i): int(k) for i, k in rows}
