"""Importing known truth (gold labels): all rows or none, never as votes."""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.annotations.service import class_of_row
from app.auth.models import Annotator
from app.core.enums import Split
from app.core.errors import Conflict, Unprocessable
from app.gold import repository
from app.gold.models import GoldLabel
from app.gold.schemas import GoldImportResult, GoldRow
from app.items import repository as items
from app.projects.models import Project


def import_gold(
    db: Session, actor: Annotator, project: Project, rows: list[GoldRow]
) -> GoldImportResult:
    """Store each row's class as the item's gold label. Any unknown item or class, an item
    named twice with different classes, or gold that contradicts gold already stored refuses
    the whole upload (truth is not overwritten by accident: delete and re-import instead)."""
    if not rows:
        raise Unprocessable("no rows to import", code="empty_import")
    found = items.by_external_ids(db, project.id, sorted({r.external_id for r in rows}))
    class_of = {name: k for k, name in enumerate(project.classes)}
    wanted: dict[int, int] = {}
    splits: dict[int, Split] = {}
    for n, row in enumerate(rows, start=1):
        item = found.get(row.external_id)
        if item is None:
            raise Unprocessable(f"row {n}: unknown item {row.external_id!r}", code="unknown_item")
        k = class_of_row(project, class_of, row, n)
        if wanted.setdefault(item.id, k) != k:
            raise Unprocessable(
                f"row {n}: item {row.external_id!r} is given two different gold classes",
                code="conflicting_gold",
            )
        splits[item.id] = item.split
    existing = repository.for_items(db, sorted(wanted))
    for item_id, gold in existing.items():
        if gold.class_index != wanted[item_id]:
            raise Conflict(
                f"item {item_id} already has gold class {gold.class_index}, not {wanted[item_id]}",
                code="gold_conflict",
            )
    new = [i for i in sorted(wanted) if i not in existing]
    db.add_all(
        GoldLabel(project_id=project.id, item_id=i, class_index=wanted[i], created_by_id=actor.id)
        for i in new
    )
    db.flush()
    return GoldImportResult(
        created=len(new),
        unchanged=len(existing),
        test_items=sum(s is Split.test for s in splits.values()),
        pool_items=sum(s is Split.pool for s in splits.values()),
    )
