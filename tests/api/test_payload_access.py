"""Issue 15, item 12: an annotator reads a payload only while leased to them or after labelling
it, never a test item; engineers and admins of the project read every payload."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from app.core.db import utcnow
from app.queue.models import Lease
from tests.api.helpers import add_member, create_project, lease_next, open_batch, upload_png
from tests.conftest import BOTH_DB_MODES, Accounts

pytestmark = BOTH_DB_MODES


def _status(client: TestClient, accounts: Accounts, item_id: int, who: str) -> int:
    return client.get(f"/api/v1/items/{item_id}/payload", headers=accounts.h(who)).status_code


def test_annotator_reads_only_leased_or_labelled_payloads(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    pid = create_project(app_client, accounts)["id"]
    a, b, c = (upload_png(app_client, accounts, pid, seed=s)["id"] for s in range(3))
    test_item = upload_png(app_client, accounts, pid, seed=9, split="test")["id"]
    add_member(app_client, accounts, pid, "annotator")
    for item in (a, b, c, test_item):
        assert _status(app_client, accounts, item, "engineer") == 200
        assert _status(app_client, accounts, item, "admin") == 200
        assert _status(app_client, accounts, item, "outsider") == 404
    assert _status(app_client, accounts, test_item, "annotator") == 403
    assert _status(app_client, accounts, a, "annotator") == 403  # pool, never leased

    open_batch(factory, pid, [a, b, c])
    assert lease_next(app_client, accounts, pid, "annotator")["item"]["id"] == a
    assert _status(app_client, accounts, a, "annotator") == 200
    assert _status(app_client, accounts, b, "annotator") == 403
    ahead = app_client.get(f"/api/v1/projects/{pid}/next?ahead=1", headers=accounts.h("annotator"))
    assert ahead.status_code == 200, ahead.text
    assert ahead.json()["ahead"]["item"]["id"] == b
    assert _status(app_client, accounts, b, "annotator") == 200  # the page's prefetch

    r = app_client.post(
        f"/api/v1/items/{a}/annotations", json={"class_index": 1}, headers=accounts.h("annotator")
    )
    assert r.status_code == 201, r.text
    assert _status(app_client, accounts, a, "annotator") == 200  # their own label

    with factory() as db:  # b's lease runs out
        db.execute(
            update(Lease)
            .where(Lease.item_id == b)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        db.commit()
    assert _status(app_client, accounts, b, "annotator") == 403
    assert _status(app_client, accounts, c, "annotator") == 403
