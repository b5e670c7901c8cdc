"""An empty queue says why: items waiting for someone else, the worker preparing the next
batch, nothing left to label, or no cycle queueing (both databases, both hot paths)."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from app.core.enums import CycleState
from app.cycles.models import Cycle
from tests.api.helpers import add_member, create_project, lease_next, open_batch, upload_png
from tests.conftest import BOTH_DB_MODES, Accounts

pytestmark = BOTH_DB_MODES


def _next(client: TestClient, accounts: Accounts, pid: int, who: str) -> dict:
    r = client.get(f"/api/v1/projects/{pid}/next", headers=accounts.h(who))
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_queue_empty_names_its_reason(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    pid = create_project(app_client, accounts, labels_per_item=2)["id"]
    for who in ("annotator", "outsider"):
        add_member(app_client, accounts, pid, who)
    item = upload_png(app_client, accounts, pid, seed=1)["id"]
    cycle = open_batch(factory, pid, [item], labels_wanted=2)
    assert lease_next(app_client, accounts, pid, "annotator")["item"]["id"] == item
    r = app_client.post(
        f"/api/v1/items/{item}/annotations",
        json={"class_index": 1},
        headers=accounts.h("annotator"),
    )
    assert r.status_code == 201
    waiting = _next(app_client, accounts, pid, "annotator")
    assert waiting["status"] == "queue_empty"
    assert (waiting["reason"], waiting["waiting_for_others"]) == ("others_needed", 1)

    with factory() as db:
        db.get(Cycle, cycle).state = CycleState.training  # type: ignore[union-attr]
        db.commit()
    assert _next(app_client, accounts, pid, "annotator")["reason"] == "cycle_running"
    with factory() as db:
        db.get(Cycle, cycle).state = CycleState.labeling  # type: ignore[union-attr]
        db.commit()

    assert lease_next(app_client, accounts, pid, "outsider")["item"]["id"] == item
    r = app_client.post(
        f"/api/v1/items/{item}/annotations",
        json={"class_index": 1},
        headers=accounts.h("outsider"),
    )
    assert r.status_code == 201
    spent = _next(app_client, accounts, pid, "annotator")
    assert (spent["reason"], spent["waiting_for_others"]) == ("pool_spent", None)

    upload_png(app_client, accounts, pid, seed=2)  # unlabelled, but no cycle has queued it
    assert _next(app_client, accounts, pid, "annotator")["reason"] == "no_cycle"
