"""Who may say a vote is whose (issue 15, item 11): imports name crowd identities of their own,
never an account that signs in; those identities never sign in; engineers see and add only
the people they work with or may assign."""

from __future__ import annotations

from fastapi.testclient import TestClient

from app.auth.service import create_annotator
from app.core.enums import Role
from tests.api.helpers import create_project, upload_png
from tests.conftest import BOTH_DB_MODES, Accounts, row_counts

pytestmark = BOTH_DB_MODES


def _import(client: TestClient, accounts: Accounts, pid: int, who: str) -> tuple[int, dict]:
    r = client.post(
        f"/api/v1/projects/{pid}/annotations:import",
        json=[{"external_id": "a", "annotator": who, "class_index": 1}],
        headers=accounts.h("engineer"),
    )
    return r.status_code, r.json()


def test_an_import_cannot_name_an_account_that_signs_in(
    app_client: TestClient, accounts: Accounts, factory
) -> None:
    pid = create_project(app_client, accounts)["id"]
    upload_png(app_client, accounts, pid, seed=0, external_id="a")
    for who in ("admin", "annotator", "engineer"):
        before = row_counts(factory)
        status, body = _import(app_client, accounts, pid, who)
        assert status == 422, body
        assert body["error"]["code"] == "import_name_taken"
        assert row_counts(factory) == before
    status, body = _import(app_client, accounts, pid, "bad\tname")
    assert status == 422
    assert body["error"]["code"] == "bad_annotator_name"
    status, body = _import(app_client, accounts, pid, "crowd-7")
    assert status == 200, body


def test_imported_identities_never_sign_in_nor_join(
    app_client: TestClient, accounts: Accounts
) -> None:
    pid = create_project(app_client, accounts)["id"]
    upload_png(app_client, accounts, pid, seed=0, external_id="a")
    assert _import(app_client, accounts, pid, "crowd-7")[0] == 200
    people = app_client.get("/api/v1/annotators", headers=accounts.h("admin")).json()
    crowd = next(p for p in people if p["name"] == "crowd-7")
    assert crowd["external"] is True
    assert all(not p["external"] for p in people if p["name"] != "crowd-7")
    r = app_client.post(
        f"/api/v1/annotators/{crowd['id']}/tokens", json={}, headers=accounts.h("admin")
    )
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "external_identity"
    r = app_client.post(
        f"/api/v1/projects/{pid}/members",
        json={"annotator_id": crowd["id"]},
        headers=accounts.h("engineer"),
    )
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "external_identity"


def test_engineers_see_and_add_only_whom_they_work_with(
    app_client: TestClient, accounts: Accounts, factory
) -> None:
    with factory() as db:
        other = create_annotator(db, actor=None, name="other-engineer", role=Role.engineer)
        db.commit()
        other_id = other.id
    seen = {p["name"] for p in app_client.get(
        "/api/v1/annotators", headers=accounts.h("engineer")).json()}  # fmt: skip
    assert {"engineer", "annotator", "outsider"} <= seen
    assert not {"admin", "other-engineer"} & seen
    everyone = {p["name"] for p in app_client.get(
        "/api/v1/annotators", headers=accounts.h("admin")).json()}  # fmt: skip
    assert {"admin", "other-engineer"} <= everyone

    pid = create_project(app_client, accounts)["id"]
    r = app_client.post(
        f"/api/v1/projects/{pid}/members",
        json={"annotator_id": other_id},
        headers=accounts.h("engineer"),
    )
    assert r.status_code == 403, r.text
    r = app_client.post(
        f"/api/v1/projects/{pid}/members",
        json={"annotator_id": other_id},
        headers=accounts.h("admin"),
    )
    assert r.status_code == 204, r.text
    # Now they share a project: the engineer sees their colleague.
    seen = {p["name"] for p in app_client.get(
        "/api/v1/annotators", headers=accounts.h("engineer")).json()}  # fmt: skip
    assert "other-engineer" in seen
