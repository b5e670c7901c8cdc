from __future__ import annotations

from fastapi.testclient import TestClient

from tests.api.helpers import create_project, upload_png
from tests.conftest import Accounts


def test_starting_a_cycle_records_it_and_sends_its_task_after_commit(
    app_client: TestClient, accounts: Accounts
) -> None:
    project = create_project(app_client, accounts, seed=7, batch_size=4)
    pid = project["id"]
    upload_png(app_client, accounts, pid)
    h = accounts.h("engineer")
    r = app_client.post(f"/api/v1/projects/{pid}/cycles", json={"strategy": "margin"}, headers=h)
    assert r.status_code == 202, r.text
    cycle = r.json()
    assert (cycle["number"], cycle["state"], cycle["strategy"]) == (1, "created", "margin")
    assert (cycle["seed"], cycle["batch_size"]) == (8, 4)  # project seed + cycle number
    sent = app_client.app.state.task_sender.sent  # type: ignore[attr-defined]
    assert list(sent) == [("annoloop.cycles.run", [cycle["id"]], "train")]

    again = app_client.post(f"/api/v1/projects/{pid}/cycles", json={}, headers=h)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "cycle_running"
    assert len(sent) == 1  # a refused request sends nothing

    bad = app_client.post(f"/api/v1/projects/{pid}/cycles", json={"strategy": "nope"}, headers=h)
    assert bad.status_code == 422
    listed = app_client.get(f"/api/v1/projects/{pid}/cycles", headers=h).json()
    assert [c["id"] for c in listed] == [cycle["id"]]

    cancelled = app_client.post(f"/api/v1/projects/{pid}/cycles/{cycle['id']}/cancel", headers=h)
    assert cancelled.json()["state"] == "cancelled"
    for action in ("cancel", "retry"):  # cancelled is terminal: both are illegal now
        r = app_client.post(f"/api/v1/projects/{pid}/cycles/{cycle['id']}/{action}", headers=h)
        assert r.status_code == 409, r.text
        assert r.json()["error"]["code"] == "illegal_transition"
        assert r.json()["error"]["detail"]["state"] == "cancelled"
    assert len(sent) == 1  # the refused retry sent nothing
    r = app_client.post(f"/api/v1/projects/{pid}/cycles", json={}, headers=h)
    assert r.status_code == 202
    assert r.json()["number"] == 2


def test_annotators_cannot_start_cycles(app_client: TestClient, accounts: Accounts) -> None:
    pid = create_project(app_client, accounts)["id"]
    r = app_client.post(f"/api/v1/projects/{pid}/cycles", json={}, headers=accounts.h("annotator"))
    assert r.status_code == 403
