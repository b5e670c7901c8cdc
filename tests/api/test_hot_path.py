"""The annotator's routes on the Postgres hot path (app/fastpath) check callers, and answer,
exactly as the sync path does: each case runs in both database modes, and on Postgres the
committed mode is the hot path."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from app.auth.models import Annotator, ApiToken
from app.core.config import Settings
from app.core.db import utcnow
from app.queue.models import Lease, QueueEntry
from tests.api.helpers import add_member, create_project, lease_next, open_batch, upload_png
from tests.conftest import BOTH_DB_MODES, Accounts, row_counts

pytestmark = BOTH_DB_MODES


def test_the_hot_path_serves_postgres_when_the_app_owns_its_sessions(
    app_client: TestClient, backend: str, db_mode: str
) -> None:
    hot = app_client.app.state.hot_path  # type: ignore[attr-defined]
    assert (hot is not None) == (backend == "postgres" and db_mode == "committed")


def _world(
    client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> tuple[int, list[int]]:
    pid = create_project(client, accounts)["id"]
    add_member(client, accounts, pid, "annotator")
    items = [upload_png(client, accounts, pid, seed=s)["id"] for s in range(3)]
    open_batch(factory, pid, items)
    return pid, items


@pytest.mark.parametrize(
    ("who", "next_status", "submit_status"),
    [
        ("anon", 401, 401),
        ("garbage", 401, 401),
        ("outsider", 404, 404),  # not a member: the project looks missing
        ("annotator", 200, 409),  # a member with no lease on the item
        ("admin", 200, 409),  # admins see every project
    ],
)
@pytest.mark.rules("R-TOKEN", "R-VISIBLE")
def test_callers(
    who: str,
    next_status: int,
    submit_status: int,
    app_client: TestClient,
    accounts: Accounts,
    factory: sessionmaker[Session],
) -> None:
    pid, items = _world(app_client, accounts, factory)
    special = {"anon": {}, "garbage": {"Authorization": "Bearer al_not-a-token"}}
    headers = special[who] if who in special else accounts.h(who)
    r = app_client.get(f"/api/v1/projects/{pid}/next", headers=headers)
    assert r.status_code == next_status, r.text
    target = items[-1]  # not leased to the caller (``next`` leased the first item)
    before = row_counts(factory)
    r = app_client.post(
        f"/api/v1/items/{target}/annotations", json={"class_index": 1}, headers=headers
    )
    assert r.status_code == submit_status, r.text
    assert row_counts(factory) == before


@pytest.mark.parametrize("how", ["revoked", "expired", "disabled"])
@pytest.mark.rules("R-TOKEN")
def test_dead_tokens_get_401_and_change_nothing(
    how: str, app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    pid, _ = _world(app_client, accounts, factory)
    leased = lease_next(app_client, accounts, pid, "annotator")
    with factory() as db:
        person = accounts.ids["annotator"]
        if how == "disabled":
            db.execute(update(Annotator).where(Annotator.id == person).values(active=False))
        else:
            column = "revoked_at" if how == "revoked" else "expires_at"
            db.execute(
                update(ApiToken)
                .where(ApiToken.annotator_id == person)
                .values({column: utcnow() - timedelta(seconds=1)})
            )
        db.commit()
    before = row_counts(factory)
    r = app_client.get(f"/api/v1/projects/{pid}/next", headers=accounts.h("annotator"))
    assert r.status_code == 401, r.text
    r = app_client.post(
        f"/api/v1/items/{leased['item']['id']}/annotations",
        json={"class_index": 1},
        headers=accounts.h("annotator"),
    )
    assert r.status_code == 401, r.text
    assert row_counts(factory) == before


@pytest.mark.rules("R-VISIBLE")
def test_unknown_project_and_item_are_404(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    _world(app_client, accounts, factory)
    before = row_counts(factory)
    r = app_client.get("/api/v1/projects/999999/next", headers=accounts.h("annotator"))
    assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found")
    r = app_client.post(
        "/api/v1/items/999999/annotations", json={"class_index": 0}, headers=accounts.h("admin")
    )
    assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found")
    assert row_counts(factory) == before


@pytest.mark.parametrize("class_index", [10, 2**31, 10**30])
@pytest.mark.rules("R-CLASS-RANGE")
def test_any_class_index_out_of_range_is_422(
    class_index: int, app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    # Postgres types a Python int by its size; the call must not fail on big ones (500).
    pid, _ = _world(app_client, accounts, factory)
    leased = lease_next(app_client, accounts, pid, "annotator")
    before = row_counts(factory)
    r = app_client.post(
        f"/api/v1/items/{leased['item']['id']}/annotations",
        json={"class_index": class_index},
        headers=accounts.h("annotator"),
    )
    assert (r.status_code, r.json()["error"]["code"]) == (422, "wrong_class"), r.text
    assert str(class_index) in r.json()["error"]["message"]
    assert row_counts(factory) == before


@pytest.mark.rules("R-TEST-ITEM")
def test_a_test_item_is_409_test_item_and_changes_nothing(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    pid, _ = _world(app_client, accounts, factory)
    held = upload_png(app_client, accounts, pid, seed=9, split="test")["id"]
    lease_next(app_client, accounts, pid, "annotator")
    before = row_counts(factory)
    for key in (None, "key-test-item"):  # with a key: no stored label to replay either
        r = app_client.post(
            f"/api/v1/items/{held}/annotations",
            json={"class_index": 1, "idempotency_key": key},
            headers=accounts.h("annotator"),
        )
        assert r.status_code == 409, r.text
        assert r.json()["error"] == {
            "code": "test_item",
            "message": "test items are labelled by import, not in the queue",
        }
    assert row_counts(factory) == before


@pytest.mark.rules("R-NOT-LEASED")
def test_a_label_without_the_callers_lease_is_409_not_leased_and_changes_nothing(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    pid, items = _world(app_client, accounts, factory)
    others = lease_next(app_client, accounts, pid, "admin")  # items[0]: someone else's lease
    mine = lease_next(app_client, accounts, pid, "annotator")  # items[1], then skipped
    r = app_client.post(
        f"/api/v1/leases/{mine['lease']['id']}/skip", headers=accounts.h("annotator")
    )
    assert r.status_code == 204
    before = row_counts(factory)
    with factory() as db:
        leases = [(x.id, x.released_at, x.outcome) for x in db.scalars(select(Lease))]
    # Another's lease, the caller's skipped lease, never leased at all.
    for item in (others["item"]["id"], mine["item"]["id"], items[2]):
        r = app_client.post(
            f"/api/v1/items/{item}/annotations",
            json={"class_index": 1},
            headers=accounts.h("annotator"),
        )
        assert r.status_code == 409, r.text
        assert r.json()["error"] == {
            "code": "not_leased",
            "message": f"item {item} is not leased to you",
        }
    assert row_counts(factory) == before
    with factory() as db:
        assert [(x.id, x.released_at, x.outcome) for x in db.scalars(select(Lease))] == leases


@pytest.mark.rules("R-LEASE")
def test_a_lease_lasts_lease_seconds_and_takes_a_slot(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session], settings: Settings
) -> None:
    pid, items = _world(app_client, accounts, factory)
    lease = lease_next(app_client, accounts, pid, "annotator")["lease"]
    created, expires = (datetime.fromisoformat(lease[k]) for k in ("created_at", "expires_at"))
    assert expires - created == timedelta(seconds=settings.lease_seconds)
    with factory() as db:
        entry = db.scalars(select(QueueEntry).where(QueueEntry.item_id == items[0])).one()
        assert (entry.leases_open, entry.labels_received) == (1, 0)
        stored = db.get(Lease, lease["id"])
        assert stored is not None
        assert (stored.created_at, stored.expires_at) == (created, expires)
