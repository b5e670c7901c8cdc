from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from tests.api.helpers import add_member, create_project, lease_next, open_batch, upload_png
from tests.conftest import BOTH_DB_MODES, Accounts, row_counts

pytestmark = BOTH_DB_MODES


def _setup(
    client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> tuple[int, int]:
    pid = create_project(client, accounts)["id"]
    add_member(client, accounts, pid, "annotator")
    item = upload_png(client, accounts, pid, seed=1, external_id="one")
    open_batch(factory, pid, [item["id"]])
    assert lease_next(client, accounts, pid, "annotator")["item"]["id"] == item["id"]
    return pid, item["id"]


@pytest.mark.rules("R-REPLAY")
def test_submit_replay_and_list(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    pid, item = _setup(app_client, accounts, factory)
    h = accounts.h("annotator")
    body = {"class_index": 3, "idempotency_key": "key-00000001"}
    first = app_client.post(f"/api/v1/items/{item}/annotations", json=body, headers=h)
    assert first.status_code == 201, first.text
    again = app_client.post(f"/api/v1/items/{item}/annotations", json=body, headers=h)
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    listed = app_client.get(
        f"/api/v1/projects/{pid}/annotations", headers=accounts.h("engineer")
    ).json()
    assert [(a["item_id"], a["class_index"], a["source"]) for a in listed["items"]] == [
        (item, 3, "human")
    ]


@pytest.mark.rules("R-CLASS-RANGE", "R-ONE-LABEL", "R-REPLAY", "R-VISIBLE")
def test_bad_labels_are_refused_and_change_nothing(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    _, item = _setup(app_client, accounts, factory)
    h = accounts.h("annotator")
    ok = app_client.post(
        f"/api/v1/items/{item}/annotations",
        json={"class_index": 1, "idempotency_key": "key-00000001"},
        headers=h,
    )
    assert ok.status_code == 201
    before = row_counts(factory)
    url = f"/api/v1/items/{item}/annotations"
    cases = [
        ("wrong class", url, {"json": {"class_index": 10}}, h, 422, "wrong_class"),
        ("negative class", url, {"json": {"class_index": -1}}, h, 422, "invalid"),
        ("second label", url, {"json": {"class_index": 2}}, h, 409, "already_labelled"),
        (
            "key reused for another label",
            url,
            {"json": {"class_index": 2, "idempotency_key": "key-00000001"}},
            h,
            409,
            "idempotency_key_reused",
        ),
        (
            "unknown item",
            "/api/v1/items/999999/annotations",
            {"json": {"class_index": 1}},
            h,
            404,
            "not_found",
        ),
        (
            "malformed json",
            url,
            {"content": b'{"class_index": 1', "headers": {"Content-Type": "application/json"}},
            h,
            400,
            "malformed_json",
        ),
        (
            "not a member",
            url,
            {"json": {"class_index": 1}},
            accounts.h("outsider"),
            404,
            "not_found",
        ),
        ("extra field", url, {"json": {"class_index": 1, "x": 1}}, h, 422, "invalid"),
    ]
    for what, target, kwargs, headers, status, code in cases:
        extra = kwargs.pop("headers", {}) if isinstance(kwargs.get("headers"), dict) else {}
        r = app_client.post(target, headers={**headers, **extra}, **kwargs)  # type: ignore[arg-type]
        assert r.status_code == status, (what, r.text)
        assert r.json()["error"]["code"] == code, (what, r.json())
    assert row_counts(factory) == before


def test_import_csv_and_json_is_all_or_nothing_and_repeatable(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    pid = create_project(app_client, accounts)["id"]
    for s in range(3):
        upload_png(app_client, accounts, pid, seed=s, external_id=f"e{s}")
    h = accounts.h("engineer")
    url = f"/api/v1/projects/{pid}/annotations:import"
    csv_body = "external_id,annotator,class_index\ne0,crowd-1,3\ne1,crowd-1,4\ne0,crowd-2,5\n"
    r = app_client.post(url, content=csv_body, headers={**h, "Content-Type": "text/csv"})
    assert r.status_code == 200, r.text
    assert r.json() == {"created": 3, "skipped_duplicates": 0, "annotators_created": 2}
    r = app_client.post(url, content=csv_body, headers={**h, "Content-Type": "text/csv"})
    assert r.json() == {"created": 0, "skipped_duplicates": 3, "annotators_created": 0}
    before = row_counts(factory)
    bad = [
        {"external_id": "e2", "annotator": "crowd-3", "class_name": "7"},
        {"external_id": "nope", "annotator": "crowd-3", "class_index": 1},
    ]
    r = app_client.post(url, json=bad, headers=h)
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "unknown_item"
    assert row_counts(factory) == before
    r = app_client.post(url, json=bad[:1], headers=h)
    assert r.status_code == 200
    assert r.json()["created"] == 1
