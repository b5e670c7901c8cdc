"""The sweep that re-sends lost cycle tasks (``app.cycles.reconcile``, issue 15 item 5), on
both databases: what it finds owed, its grace period, and a send that fails being tried
again at the next sweep (whatever the broker: Redis, or the embedded SQLite file, whose
write can fail too, on a lock held past its timeout or a full disk)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from app.annotations.models import Annotation
from app.core.db import utcnow
from app.core.enums import CycleState, LabelSource, QueueState
from app.core.task_names import ADVANCE, REFRESH, RUN_CYCLE
from app.cycles.models import Cycle
from app.cycles.reconcile import Reconciler
from app.queue.models import QueueEntry
from tests.api.helpers import create_project, open_batch, upload_png
from tests.conftest import BOTH_DB_MODES, Accounts

pytestmark = BOTH_DB_MODES


class FlakySender:
    def __init__(self, failures: int) -> None:
        self.failures, self.sent = failures, []  # type: ignore[var-annotated]

    def send(self, name: str, args: list[Any], queue: str) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("broker down")
        self.sent.append((name, args, queue))


def test_lost_advance_and_run_are_sent_again(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    pid = create_project(app_client, accounts)["id"]
    items = [upload_png(app_client, accounts, pid, seed=s)["id"] for s in range(2)]
    cycle_id = open_batch(factory, pid, items)
    now = [0.0]
    sender = FlakySender(failures=1)
    sweep = Reconciler(factory, sender, grace_s=10, clock=lambda: now[0]).sweep

    assert sweep() == []  # a batch still being labelled owes nothing
    with factory() as db:  # the batch is labelled; the advance task was lost
        db.execute(
            update(QueueEntry).where(QueueEntry.cycle_id == cycle_id).values(state=QueueState.done)
        )
        db.commit()
    assert sweep() == []  # first seen: within the grace period
    now[0] = 10
    assert sweep() == []
    assert sender.failures == 0
    now[0] = 11
    assert sweep() == [(ADVANCE.name, [pid], "default")]
    now[0] = 12
    assert sweep() == []  # not again before the grace period
    with factory() as db:  # advance ran: the next cycle was created, its run task lost
        db.execute(update(Cycle).where(Cycle.id == cycle_id).values(state=CycleState.completed))
        db.commit()
    second = open_batch(factory, pid, items[:1])
    with factory() as db:
        db.execute(update(Cycle).where(Cycle.id == second).values(state=CycleState.created))
        db.commit()
    assert sweep() == []
    now[0] = 30
    # A plain message: one arriving after the original began finds the cycle claimed by
    # another message and does nothing (tests/cycles/test_task_claims.py).
    assert sweep() == [(RUN_CYCLE.name, [second], "train")]


def test_a_lost_refresh_is_sent_again(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    """A cleaning project re-ranks every ``finetune_every`` labels; when that task is lost,
    the sweep sends it once the labels since the last cycle read its inputs are enough."""
    pid = create_project(app_client, accounts, kind="clean", finetune_every=2, relabel_budget=10)[
        "id"
    ]
    items = [upload_png(app_client, accounts, pid, seed=s)["id"] for s in range(3)]
    cycle_id = open_batch(factory, pid, items)
    with factory() as db:
        started = utcnow() - timedelta(minutes=5)
        db.execute(update(Cycle).where(Cycle.id == cycle_id).values(started_at=started))
        db.commit()
    now = [0.0]
    sender = FlakySender(failures=0)
    sweep = Reconciler(factory, sender, grace_s=1, clock=lambda: now[0]).sweep

    def human_label(item: int, who: str) -> None:
        with factory() as db:
            label = Annotation(
                item_id=item,
                project_id=pid,
                annotator_id=accounts.ids[who],
                class_index=1,
                source=LabelSource.human,
                cycle_id=cycle_id,
            )
            db.add(label)
            db.commit()

    human_label(items[0], "annotator")
    assert sweep() == []
    now[0] = 5
    assert sweep() == []  # one label since the cycle read its inputs: not due
    human_label(items[1], "annotator")
    assert sweep() == []  # due now, first seen: the grace period runs
    now[0] = 10
    assert sweep() == [(REFRESH.name, [pid], "default")]
    with factory() as db:  # a running cycle re-ranks already: nothing owed
        db.execute(update(Cycle).where(Cycle.id == cycle_id).values(state=CycleState.training))
        db.commit()
    now[0] = 30
    assert sweep() == []
