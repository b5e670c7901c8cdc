from __future__ import annotations

from fastapi.testclient import TestClient

from tests.conftest import Accounts


def test_requests_without_a_valid_token_are_refused(
    app_client: TestClient, accounts: Accounts
) -> None:
    assert app_client.get("/api/v1/projects").status_code == 401
    r = app_client.get("/api/v1/projects", headers={"Authorization": "Bearer al_nope"})
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"
    me = app_client.get("/api/v1/me", headers=accounts.h("engineer")).json()
    assert (me["name"], me["role"]) == ("engineer", "engineer")


def test_admin_creates_people_and_tokens_and_revokes_them(
    app_client: TestClient, accounts: Accounts
) -> None:
    r = app_client.post(
        "/api/v1/annotators",
        json={"name": "alice", "role": "engineer"},
        headers=accounts.h("admin"),
    )
    assert r.status_code == 201, r.text
    alice = r.json()
    assert alice["token"].startswith("al_")
    alice_h = {"Authorization": f"Bearer {alice['token']}"}
    assert app_client.get("/api/v1/me", headers=alice_h).json()["name"] == "alice"

    r = app_client.post(
        f"/api/v1/annotators/{alice['id']}/tokens",
        json={"label": "laptop"},
        headers=accounts.h("admin"),
    )
    assert r.status_code == 201
    second = r.json()
    second_h = {"Authorization": f"Bearer {second['token']}"}
    assert app_client.get("/api/v1/me", headers=second_h).status_code == 200
    assert app_client.delete(f"/api/v1/tokens/{second['id']}", headers=second_h).status_code == 204
    assert app_client.get("/api/v1/me", headers=second_h).status_code == 401
    # The first token still works: revocation is per token.
    assert app_client.get("/api/v1/me", headers=alice_h).status_code == 200


def test_engineers_create_annotators_only(app_client: TestClient, accounts: Accounts) -> None:
    h = accounts.h("engineer")
    ok = app_client.post("/api/v1/annotators", json={"name": "bob"}, headers=h)
    assert ok.status_code == 201
    assert ok.json()["role"] == "annotator"
    r = app_client.post("/api/v1/annotators", json={"name": "eve", "role": "admin"}, headers=h)
    assert r.status_code == 403
    r = app_client.post("/api/v1/annotators", json={"name": "bob"}, headers=h)
    assert r.status_code == 409
    r = app_client.post("/api/v1/annotators", json={"name": "x"}, headers=accounts.h("annotator"))
    assert r.status_code == 403
