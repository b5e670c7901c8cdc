"""ActiveLab's mixed queue asks for one label an entry: a tie does not keep the entry open as
cleaning's settle rule does; the next ranking decides (both databases, both hot paths). The
cycle's strategy decides, whatever the project's is."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.queue.models import QueueEntry
from tests.api.helpers import add_member, create_project, lease_next, open_batch, upload_png
from tests.conftest import BOTH_DB_MODES, Accounts

pytestmark = BOTH_DB_MODES


@pytest.mark.parametrize(
    ("strategy", "after_tie"),
    [("activelab", ("done", 1, 1)), ("ce_minus_entropy", ("open", 1, 2))],
)
@pytest.mark.rules("R-MAJORITY")
def test_a_tie_keeps_a_cleaning_entry_open_but_not_a_mixed_one(
    app_client: TestClient,
    accounts: Accounts,
    factory: sessionmaker[Session],
    strategy: str,
    after_tie: tuple[str, int, int],
) -> None:
    # The project's strategy is the other one: the cycle's must win.
    other = "ce_minus_entropy" if strategy == "activelab" else "activelab"
    pid = create_project(app_client, accounts, kind="clean", strategy=other)["id"]
    add_member(app_client, accounts, pid, "annotator")
    item = upload_png(app_client, accounts, pid, seed=0, external_id="x")["id"]
    r = app_client.post(
        f"/api/v1/projects/{pid}/annotations:import",
        json=[{"external_id": "x", "annotator": "crowd", "class_index": 0}],
        headers=accounts.h("engineer"),
    )
    assert r.status_code == 200, r.text
    cycle = open_batch(factory, pid, [item], strategy=strategy)
    assert lease_next(app_client, accounts, pid, "annotator")["item"]["id"] == item
    r = app_client.post(
        f"/api/v1/items/{item}/annotations",
        json={"class_index": 1},
        headers=accounts.h("annotator"),
    )
    assert r.status_code == 201, r.text
    with factory() as db:
        e = db.scalar(select(QueueEntry).where(QueueEntry.cycle_id == cycle))
        assert e is not None
        assert (e.state.value, e.labels_received, e.labels_wanted) == after_tie
