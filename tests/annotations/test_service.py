"""``app.annotations.service`` on the test's rolled-back session, both databases: a label
under a lease, its replay, the refusals (each changing nothing), the task sent after the
batch's last label, and imports."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.annotations import service
from app.annotations.models import Annotation
from app.annotations.schemas import AnnotationCreate, ImportRow
from app.auth.models import Annotator
from app.core.enums import CycleState, LabelSource, QueueState, Role, Split
from app.core.errors import Conflict, DomainError
from app.items.models import Item
from app.projects.models import Project
from app.queue import service as queue
from app.queue.models import QueueEntry
from tests import services as build
from tests.services import RecordingSender

LEASE_S = 600


def _world(db: Session, n: int = 2, **settings: object) -> tuple[Project, list[int], int]:
    owner = build.person(db, "eng", Role.engineer)
    project = build.project(db, owner, **settings)
    ids = build.items(db, project, n)
    return project, ids, build.cycle(db, project, CycleState.labeling, queued=ids).id


def _submit(
    db: Session, who: Annotator, project: Project, item_id: int, k: int = 1, key: str | None = None
) -> service.Submitted:
    body = AnnotationCreate(class_index=k, idempotency_key=key)
    return service.submit(db, who, project, db.get_one(Item, item_id), body)


def _votes(db: Session, project: Project) -> int:
    count = select(func.count(Annotation.id)).where(Annotation.project_id == project.id)
    return int(db.scalar(count) or 0)


def test_a_label_under_a_lease_is_stored_counted_and_spent(db: Session) -> None:
    project, ids, cycle_id = _world(db)
    ann = build.person(db, "ann")
    queue.next_item(db, ann, project, LEASE_S)
    done = _submit(db, ann, project, ids[0], k=2)
    assert not done.replayed
    label = done.annotation
    assert (label.class_index, label.cycle_id, label.source) == (2, cycle_id, LabelSource.human)
    entry = db.scalars(select(QueueEntry).where(QueueEntry.item_id == ids[0])).one()
    db.refresh(entry)
    assert (entry.state, entry.labels_received, entry.leases_open) == (QueueState.done, 1, 0)
    assert project.labels_spent == 1


def test_a_resent_key_replays_and_a_reused_key_is_refused(db: Session) -> None:
    project, ids, _ = _world(db)
    ann = build.person(db, "ann")
    queue.next_item(db, ann, project, LEASE_S)
    first = _submit(db, ann, project, ids[0], k=1, key="key-0001")
    again = _submit(db, ann, project, ids[0], k=1, key="key-0001")
    assert again.replayed
    assert again.annotation.id == first.annotation.id
    assert (_votes(db, project), project.labels_spent) == (1, 1)
    with pytest.raises(Conflict) as reused:
        _submit(db, ann, project, ids[0], k=0, key="key-0001")
    assert reused.value.code == "idempotency_key_reused"


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("no_lease", "not_leased"),
        ("class_out_of_range", "wrong_class"),
        ("test_item", "test_item"),
        ("twice", "already_labelled"),
    ],
)
def test_refusals_carry_a_code_and_change_nothing(db: Session, case: str, code: str) -> None:
    project, ids, _ = _world(db)
    ann = build.person(db, "ann")
    queue.next_item(db, ann, project, LEASE_S)
    target, k = ids[0], 1
    if case == "no_lease":
        target = ids[1]
    elif case == "class_out_of_range":
        k = len(project.classes)
    elif case == "test_item":
        target = build.items(db, project, 1, split=Split.test)[0]
    elif case == "twice":
        _submit(db, ann, project, ids[0])
    before = (_votes(db, project), project.labels_spent)
    with pytest.raises(DomainError) as refused:
        _submit(db, ann, project, target, k=k)
    assert refused.value.code == code
    assert (_votes(db, project), project.labels_spent) == before


def test_the_last_label_of_a_batch_sends_advance_after_the_commit(
    db: Session, sender: RecordingSender
) -> None:
    project, ids, _ = _world(db, n=2)
    ann, bob = build.person(db, "ann"), build.person(db, "bob")
    queue.next_item(db, ann, project, LEASE_S)
    queue.next_item(db, bob, project, LEASE_S)
    _submit(db, ann, project, ids[0])
    db.commit()
    assert sender.sent == []  # an entry is still open
    _submit(db, bob, project, ids[1])
    assert sender.sent == []  # not before the commit
    db.commit()
    assert sender.sent == [("annoloop.cycles.advance", [project.id], "default")]


def test_a_budget_spent_between_lease_and_label_refuses_it(db: Session) -> None:
    project, ids, _ = _world(db, label_budget=1)
    ann = build.person(db, "ann")
    queue.next_item(db, ann, project, LEASE_S)
    project.label_budget = 0  # lowered by an engineer meanwhile
    db.flush()
    with pytest.raises(Conflict) as spent:
        _submit(db, ann, project, ids[0])
    assert spent.value.code == "budget_spent"


def test_imports_are_all_or_nothing_and_idempotent(db: Session) -> None:
    project, _, _ = _world(db, n=2)
    rows = [
        ImportRow(external_id="pool-0", annotator="crowd-1", class_name="two"),
        ImportRow(external_id="pool-1", annotator="crowd-2", class_index=0),
    ]
    out = service.import_rows(db, project, rows)
    assert (out.created, out.skipped_duplicates, out.annotators_created) == (2, 0, 2)
    again = service.import_rows(db, project, rows)
    assert (again.created, again.skipped_duplicates, again.annotators_created) == (0, 2, 0)
    bad = [*rows, ImportRow(external_id="nope", annotator="crowd-1", class_index=0)]
    with pytest.raises(DomainError) as refused:
        service.import_rows(db, project, bad)
    assert refused.value.code == "unknown_item"
    assert _votes(db, project) == 2
