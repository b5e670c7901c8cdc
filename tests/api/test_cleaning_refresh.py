"""A re-rank that came due while the last one was computing is started when that one opens
its queue, in the same transaction (it used to be dropped: one cycle runs at a time)."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.core.enums import CycleState, ProjectKind
from app.cycles.models import Cycle
from app.projects.models import Project
from tests.api.helpers import create_project, upload_png
from tests.conftest import Accounts
from worker.pipeline import transitions
from worker.pipeline.snapshot import load_inputs


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, list[Any], str]] = []

    def send(self, name: str, args: list[Any], queue: str) -> None:
        self.sent.append((name, args, queue))


def _scoring_cycle(
    client: TestClient, accounts: Accounts, factory: sessionmaker[Session], spent_after: int
) -> tuple[int, Any]:
    pid = create_project(
        client, accounts, kind="clean", relabel_budget=100, finetune_every=10, batch_size=2
    )["id"]
    for s in range(6):
        upload_png(client, accounts, pid, seed=s, external_id=f"c{s}")
    client.post(
        f"/api/v1/projects/{pid}/annotations:import",
        json=[{"external_id": f"c{s}", "annotator": "crowd", "class_index": 1} for s in range(6)],
        headers=accounts.h("engineer"),
    )
    with factory() as db:
        cycle = Cycle(project_id=pid, number=1, kind=ProjectKind.clean,
                      state=CycleState.scoring, strategy="ce_minus_entropy", params={},
                      seed=0, batch_size=2)  # fmt: skip
        db.add(cycle)
        db.commit()
        inputs = load_inputs(db, cycle)
        db.get(Project, pid).labels_spent = spent_after  # type: ignore[union-attr]
        db.commit()
    return pid, inputs


def _open(factory: sessionmaker[Session], inputs: Any, sender: Recorder) -> None:
    ranked = [(i, float(-n)) for n, i in enumerate(inputs.labelled.ids)]
    assert transitions.open_cleaning_queue(factory, inputs, ranked, metrics={}, sender=sender)


def test_a_refresh_due_while_scoring_starts_when_the_queue_opens(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    pid, inputs = _scoring_cycle(app_client, accounts, factory, spent_after=10)
    sender = Recorder()
    _open(factory, inputs, sender)
    with factory() as db:
        cycles = db.execute(
            select(Cycle.number, Cycle.state).where(Cycle.project_id == pid).order_by(Cycle.number)
        ).all()
    assert [(n, s.value) for n, s in cycles] == [(1, "labeling"), (2, "created")]
    assert sender.sent == [
        ("annoloop.cycles.run", [cycles[1][0] and _id(factory, pid, 2)], "train")
    ]


def test_no_refresh_before_finetune_every_labels(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    pid, inputs = _scoring_cycle(app_client, accounts, factory, spent_after=9)
    sender = Recorder()
    _open(factory, inputs, sender)
    assert sender.sent == []
    with factory() as db:
        assert db.scalar(select(Cycle.state).where(Cycle.project_id == pid)).value == "labeling"


def _id(factory: sessionmaker[Session], pid: int, number: int) -> int:
    with factory() as db:
        return int(
            db.scalar(select(Cycle.id).where(Cycle.project_id == pid, Cycle.number == number))
        )
