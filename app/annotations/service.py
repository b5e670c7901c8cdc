"""Submitting and importing crowd labels.

A resent submission with the same idempotency key returns the stored label (so a client
retrying after a network error never labels twice); a second, different label for the same
item by the same annotator is a conflict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.annotations import repository
from app.annotations.models import Annotation
from app.annotations.schemas import AnnotationCreate, ImportResult, ImportRow
from app.auth import repository as annotators
from app.auth.models import Annotator
from app.auth.service import get_or_create_importer
from app.core.enums import LabelSource, ProjectKind, Split
from app.core.errors import Conflict, Unprocessable
from app.core.task_names import ADVANCE, REFRESH
from app.core.tasks import send_after_commit
from app.cycles import repository as cycle_repo
from app.items import repository as items
from app.items.models import Item
from app.projects.models import Project
from app.queue import service as queue


class ClassChoice(Protocol):
    """An uploaded row's class: its index or its name."""

    @property
    def class_index(self) -> int | None: ...

    @property
    def class_name(self) -> str | None: ...


@dataclass(frozen=True)
class Submitted:
    annotation: Annotation
    replayed: bool


def submit(
    db: Session, actor: Annotator, project: Project, item: Item, body: AnnotationCreate
) -> Submitted:
    """Store a human label under the caller's lease. Statement order is the lock order
    (lease, then queue entry, then project), so concurrent submits and sweeps cannot
    deadlock, and the project row (the budget counter) is locked only until the commit."""
    # The hot path applies these rules, in this order, in app/fastpath/sql/submit.sql.
    check_class(project, body.class_index)  # R-CLASS-RANGE
    # R-REPLAY. The replayed label and the caller's live label on this item, in one query.
    mine = repository.own_labels(db, actor.id, item.id, body.idempotency_key)
    earlier = next((a for a in mine if a.idempotency_key == body.idempotency_key), None)
    if body.idempotency_key is not None and earlier is not None:
        return _replay(earlier, item, body)
    if item.split is Split.test:  # R-TEST-ITEM
        raise Conflict("test items are labelled by import, not in the queue", code="test_item")
    if any(a.item_id == item.id and a.is_live_human for a in mine):  # R-ONE-LABEL
        raise Conflict(f"you already labelled item {item.id}", code="already_labelled")
    try:
        entry_id = queue.take_lease(db, actor, item)
    except Conflict:
        # A concurrent resend of this key closed the lease after the lookup above (this
        # statement waited for its commit): a new lookup sees its label.
        if body.idempotency_key is None:
            raise
        keyed = repository.keyed_label(db, actor.id, body.idempotency_key)
        if keyed is None:
            raise
        return _replay(keyed, item, body)
    labelled = queue.record_label(db, entry_id)
    annotation = Annotation(
        item_id=item.id,
        project_id=project.id,
        annotator_id=actor.id,
        class_index=body.class_index,
        source=LabelSource.human,
        cycle_id=labelled.cycle_id,
        idempotency_key=body.idempotency_key,
    )
    db.add(annotation)
    try:
        db.flush()
    except IntegrityError as exc:  # a concurrent request won the race for the same slot
        raise Conflict(f"you already labelled item {item.id}", code="already_labelled") from exc
    if project.kind is ProjectKind.clean:
        labelled = queue.settle(db, project, labelled, repository.live_votes(db, item.id))
    elif not labelled.entry_done and (project.stop_when_decided or labelled.stop_lead):
        labelled = queue.stop_if_decided(db, project, labelled, repository.live_votes(db, item.id))
    queue.spend_budget(db, project)
    # R-ADVANCE
    if labelled.entry_done and not cycle_repo.has_open_entry(db, project.id, labelled.cycle_id):
        send_after_commit(db, *ADVANCE.message([project.id]))
    elif project.finetune_every and project.labels_spent % project.finetune_every == 0:  # R-REFRESH
        # Cleaning: re-rank with a fine-tuned model every b labels, in the worker.
        send_after_commit(db, *REFRESH.message([project.id]))
    return Submitted(annotation, replayed=False)


def _replay(earlier: Annotation, item: Item, body: AnnotationCreate) -> Submitted:
    if earlier.item_id != item.id or earlier.class_index != body.class_index:
        raise Conflict(
            "this idempotency key was already used for a different label",
            code="idempotency_key_reused",
        )
    return Submitted(earlier, replayed=True)


def check_class(project: Project, class_index: int) -> None:
    if not 0 <= class_index < len(project.classes):
        raise Unprocessable(
            f"class_index {class_index} is out of range: this project has "
            f"{len(project.classes)} classes (0–{len(project.classes) - 1})",
            code="wrong_class",
        )


def import_rows(db: Session, project: Project, rows: list[ImportRow]) -> ImportResult:
    """All rows or none. Each (annotator, item) pair is imported once; repeats are skipped,
    so re-uploading the same file is harmless."""
    if not rows:
        raise Unprocessable("no rows to import", code="empty_import")
    found = items.by_external_ids(db, project.id, sorted({r.external_id for r in rows}))
    class_of = {name: k for k, name in enumerate(project.classes)}
    resolved: list[tuple[Item, str, int]] = []
    for n, row in enumerate(rows, start=1):
        item = found.get(row.external_id)
        if item is None:
            raise Unprocessable(f"row {n}: unknown item {row.external_id!r}", code="unknown_item")
        resolved.append((item, row.annotator, class_of_row(project, class_of, row, n)))

    before = {a.name for a in annotators.list_annotators(db)}
    people = {name: get_or_create_importer(db, name) for name in sorted({r[1] for r in resolved})}
    keys = {f"import:{item.id}" for item, _, _ in resolved}
    taken = repository.existing_keys(db, {a.id for a in people.values()}, keys)
    created = skipped = 0
    for item, name, class_index in resolved:
        key = (people[name].id, f"import:{item.id}")
        if key in taken:
            skipped += 1
            continue
        taken.add(key)
        db.add(
            Annotation(
                item_id=item.id,
                project_id=project.id,
                annotator_id=key[0],
                class_index=class_index,
                source=LabelSource.import_,
                idempotency_key=key[1],
            )
        )
        created += 1
    db.flush()
    return ImportResult(
        created=created,
        skipped_duplicates=skipped,
        annotators_created=len(set(people) - before),
    )


def class_of_row(project: Project, class_of: dict[str, int], row: ClassChoice, n: int) -> int:
    """Row ``n``'s class from ``class_index`` or ``class_name`` (exactly one), or a 422."""
    if (row.class_index is None) == (row.class_name is None):
        raise Unprocessable(f"row {n}: give class_index or class_name", code="bad_row")
    if row.class_name is not None:
        if row.class_name not in class_of:
            raise Unprocessable(f"row {n}: unknown class {row.class_name!r}", code="wrong_class")
        return class_of[row.class_name]
    assert row.class_index is not None
    try:
        check_class(project, row.class_index)
    except Unprocessable as exc:
        raise Unprocessable(f"row {n}: {exc.message}", code="wrong_class") from exc
    return row.class_index
