"""With several labels per item, an item stops being asked for once the labels it still
wants could not change its majority (both databases, both hot paths)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.queue.models import QueueEntry
from tests.api.helpers import (
    add_member,
    create_project,
    label_next,
    open_batch,
    upload_png,
)
from tests.conftest import BOTH_DB_MODES, Accounts

pytestmark = BOTH_DB_MODES


def _entries(factory: sessionmaker[Session], cycle: int) -> dict[int, tuple[str, int, int]]:
    with factory() as db:
        rows = db.scalars(select(QueueEntry).where(QueueEntry.cycle_id == cycle)).all()
        return {e.item_id: (e.state.value, e.labels_received, e.labels_wanted) for e in rows}


@pytest.mark.rules("R-STOP-DECIDED")
def test_two_agreeing_labels_of_three_settle_an_item(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    pid = create_project(app_client, accounts, labels_per_item=3)["id"]
    assert app_client.get(f"/api/v1/projects/{pid}", headers=accounts.h("engineer")).json()[
        "stop_when_decided"
    ]
    for who in ("annotator", "outsider"):
        add_member(app_client, accounts, pid, who)
    items = [upload_png(app_client, accounts, pid, seed=s)["id"] for s in range(2)]
    cycle = open_batch(factory, pid, items, labels_wanted=3)
    # Item 0: 1 then 1 — a third label could not outvote them: done after two.
    assert label_next(app_client, accounts, pid, "annotator", 1) == items[0]
    assert _entries(factory, cycle)[items[0]] == ("open", 1, 3)
    assert label_next(app_client, accounts, pid, "outsider", 1) == items[0]
    assert _entries(factory, cycle)[items[0]] == ("done", 2, 2)
    # Item 1: 1 then 2 — undecided, the third label is still wanted.
    assert label_next(app_client, accounts, pid, "annotator", 1) == items[1]
    assert label_next(app_client, accounts, pid, "outsider", 2) == items[1]
    assert _entries(factory, cycle)[items[1]] == ("open", 2, 3)


def test_the_rule_can_be_turned_off(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    pid = create_project(app_client, accounts, labels_per_item=3, stop_when_decided=False)["id"]
    for who in ("annotator", "outsider"):
        add_member(app_client, accounts, pid, who)
    item = upload_png(app_client, accounts, pid, seed=0)["id"]
    cycle = open_batch(factory, pid, [item], labels_wanted=3)
    label_next(app_client, accounts, pid, "annotator", 1)
    label_next(app_client, accounts, pid, "outsider", 1)
    assert _entries(factory, cycle)[item] == ("open", 2, 3)
