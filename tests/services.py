"""Builders for service-level tests: rows made through the services (or as the worker leaves
them) on the test's session, no HTTP. The session is the ``db`` fixture (``tests/conftest.py``):
it works inside the test's one transaction, rolled back at the end, on every backend."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.auth.models import Annotator
from app.auth.service import create_annotator
from app.core.enums import CycleState, ProjectKind, Role, Split
from app.cycles.models import Cycle
from app.items.models import Item
from app.projects import service as projects
from app.projects.models import Project
from app.projects.schemas import ProjectCreate
from app.queue.models import QueueEntry

CLASSES = ["zero", "one", "two"]
SMALL_CNN = {"name": "small_cnn", "input_shape": [1, 28, 28], "hparams": {"epochs": 2}}


@dataclass
class RecordingSender:
    """A task sender that keeps what was sent (after the commit) instead of sending it."""

    sent: list[tuple[str, list[Any], str]] = field(default_factory=list)

    def send(self, name: str, args: list[Any], queue: str) -> None:
        self.sent.append((name, list(args), queue))


def person(db: Session, name: str, role: Role = Role.annotator) -> Annotator:
    return create_annotator(db, actor=None, name=name, role=role)


def project(db: Session, owner: Annotator, **overrides: Any) -> Project:
    body = {"name": "digits", "classes": CLASSES, "model_spec": SMALL_CNN, **overrides}
    return projects.create(db, owner, ProjectCreate.model_validate(body))


def items(db: Session, owner: Project, n: int, split: Split = Split.pool) -> list[int]:
    """``n`` items; their payloads are never read by the services under test."""
    rows = [
        Item(
            project_id=owner.id,
            split=split,
            blob_sha256=hashlib.sha256(f"{owner.id}-{split}-{i}".encode()).hexdigest(),
            media_type="image/png",
            width=28,
            height=28,
            external_id=f"{split.value}-{i}",
        )
        for i in range(n)
    ]
    db.add_all(rows)
    db.flush()
    return [r.id for r in rows]


def cycle(
    db: Session,
    owner: Project,
    state: CycleState,
    queued: list[int] = (),  # type: ignore[assignment]
    labels_wanted: int = 1,
) -> Cycle:
    """A cycle in ``state`` with ``queued`` items in its queue, as the worker leaves it."""
    last = db.scalar(select(func.max(Cycle.number)).where(Cycle.project_id == owner.id))
    number = (last or 0) + 1
    row = Cycle(
        project_id=owner.id,
        number=number,
        kind=ProjectKind.acquire,
        state=state,
        strategy="random",
        params={},
        seed=0,
        batch_size=max(len(queued), 1),
        metrics={},
        timings={},
    )
    db.add(row)
    db.flush()
    db.add_all(
        QueueEntry(
            project_id=owner.id,
            cycle_id=row.id,
            item_id=item_id,
            rank=rank,
            score=float(len(queued) - rank),
            labels_wanted=labels_wanted,
        )
        for rank, item_id in enumerate(queued)
    )
    db.flush()
    return row
