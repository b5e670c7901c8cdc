"""Cancelling a cycle closes its live leases (issue 15, item 3): the annotator is no longer
served the cancelled item, a label on it is refused and spends nothing, and a later cycle that
queues the same item hands it out again (it answered 500 on a duplicate open lease)."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.core.enums import LeaseOutcome, QueueState
from app.queue.models import Lease, QueueEntry
from tests.api.helpers import add_member, create_project, open_batch, upload_png
from tests.conftest import BOTH_DB_MODES, Accounts

pytestmark = BOTH_DB_MODES


def test_cancel_closes_leases_and_the_item_comes_back_cleanly(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    pid = create_project(app_client, accounts, label_budget=10)["id"]
    add_member(app_client, accounts, pid, "annotator")
    items = [upload_png(app_client, accounts, pid, seed=s)["id"] for s in range(2)]
    cycle = open_batch(factory, pid, items)
    who = accounts.h("annotator")
    first = app_client.get(f"/api/v1/projects/{pid}/next", params={"ahead": 1}, headers=who)
    assert first.json()["status"] == "leased"
    leased = first.json()["item"]["id"]

    r = app_client.post(
        f"/api/v1/projects/{pid}/cycles/{cycle}/cancel", headers=accounts.h("engineer")
    )
    assert r.status_code == 200, r.text
    with factory() as db:
        leases = db.scalars(select(Lease).where(Lease.project_id == pid)).all()
        entries = db.scalars(select(QueueEntry).where(QueueEntry.cycle_id == cycle)).all()
    assert leases
    assert all(lease.outcome is LeaseOutcome.cancelled for lease in leases)
    assert all(lease.released_at is not None for lease in leases)
    assert {(e.state, e.leases_open) for e in entries} == {(QueueState.cancelled, 0)}

    again = app_client.get(f"/api/v1/projects/{pid}/next", headers=who).json()
    assert again["status"] == "queue_empty"
    r = app_client.post(f"/api/v1/items/{leased}/annotations", json={"class_index": 1}, headers=who)
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "not_leased"
    project = app_client.get(f"/api/v1/projects/{pid}", headers=accounts.h("engineer")).json()
    assert project["labels_spent"] == 0
    with factory() as db:
        states = {
            e.state for e in db.scalars(select(QueueEntry).where(QueueEntry.cycle_id == cycle))
        }
    assert states == {QueueState.cancelled}

    open_batch(factory, pid, items)  # a later cycle queues the same items
    back = app_client.get(f"/api/v1/projects/{pid}/next", params={"ahead": 1}, headers=who)
    assert back.status_code == 200, back.text
    assert back.json()["status"] == "leased"
    assert {back.json()["item"]["id"], back.json()["ahead"]["item"]["id"]} == set(items)
