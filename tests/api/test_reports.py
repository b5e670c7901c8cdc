from __future__ import annotations

import csv
import io
import json

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from tests.api.helpers import add_member, create_project, lease_next, open_batch, upload_png
from tests.conftest import Accounts


def _labelled_project(
    client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> tuple[int, list[int]]:
    pid = create_project(client, accounts, label_budget=10, labels_per_item=2)["id"]
    add_member(client, accounts, pid, "annotator")
    add_member(client, accounts, pid, "outsider")
    items = [upload_png(client, accounts, pid, seed=s, external_id=f"x{s}")["id"] for s in range(3)]
    open_batch(factory, pid, items, labels_wanted=2)
    # x0: 2 votes for class 1; x1: a 1-1 tie (classes 2, 3); x2: unlabelled.
    for who, item, k in (
        ("annotator", 0, 1),
        ("outsider", 0, 1),
        ("annotator", 1, 2),
        ("outsider", 1, 3),
    ):
        leased = lease_next(client, accounts, pid, who)
        assert leased["item"]["id"] == items[item]
        r = client.post(
            f"/api/v1/items/{items[item]}/annotations",
            json={"class_index": k},
            headers=accounts.h(who),
        )
        assert r.status_code == 201, r.text
    return pid, items


def test_progress_reports_budget_queue_people_and_ties(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    pid, _ = _labelled_project(app_client, accounts, factory)
    lease_next(app_client, accounts, pid, "annotator")  # x2 now leased
    r = app_client.get(f"/api/v1/projects/{pid}/progress", headers=accounts.h("engineer"))
    assert r.status_code == 200, r.text
    p = r.json()
    assert (p["labels_spent"], p["label_budget"], p["labels_remaining"]) == (4, 10, 6)
    assert (p["queue_depth"], p["slots_open"], p["leases_open"]) == (1, 2, 1)
    assert p["cycle"]["queued"] == 3
    assert p["cycle"]["done"] == 2
    assert {(a["name"], a["labels"]) for a in p["per_annotator"]} == {
        ("annotator", 2),
        ("outsider", 2),
    }
    assert p["labels_last_10_min"] == 4
    assert p["eta_seconds"] is not None
    assert p["eta_seconds"] > 0
    assert p["tied_items"] == 1
    mine = app_client.get(f"/api/v1/projects/{pid}/progress", headers=accounts.h("annotator"))
    assert [a["name"] for a in mine.json()["per_annotator"]] == ["annotator"]
    r = app_client.get(f"/api/v1/projects/{pid}/progress", headers=accounts.h("admin"))
    assert len(r.json()["per_annotator"]) == 2


def test_export_in_three_formats(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    pid, _ = _labelled_project(app_client, accounts, factory)
    h = accounts.h("engineer")
    data = app_client.get(
        f"/api/v1/projects/{pid}/export", params={"format": "json"}, headers=h
    ).json()
    by_id = {row["external_id"]: row for row in data}
    assert set(by_id) == {"x0", "x1"}
    assert (by_id["x0"]["label"], by_id["x0"]["tied"]) == ("1", False)
    assert (by_id["x1"]["label"], by_id["x1"]["tied"]) == (None, True)
    assert [(v["annotator"], v["class_index"]) for v in by_id["x1"]["votes"]] == [
        ("annotator", 2),
        ("outsider", 3),
    ]
    lines = app_client.get(f"/api/v1/projects/{pid}/export", params={"format": "jsonl"}, headers=h)
    assert [json.loads(line) for line in lines.text.splitlines()] == data
    text = app_client.get(
        f"/api/v1/projects/{pid}/export", params={"format": "csv"}, headers=h
    ).text
    table = list(csv.DictReader(io.StringIO(text)))
    assert [(r["external_id"], r["label"], r["tied"]) for r in table] == [
        ("x0", "1", "False"),
        ("x1", "", "True"),
    ]
    bad = app_client.get(f"/api/v1/projects/{pid}/export", params={"format": "xml"}, headers=h)
    assert bad.status_code == 422


def test_csv_export_cells_never_start_a_formula(app_client: TestClient, accounts: Accounts) -> None:
    """Item ids, class names and importer names are user text: a cell a spreadsheet would
    run as a formula is written with a leading apostrophe; JSON keeps the value as given."""
    h = accounts.h("engineer")
    classes = ['=HYPERLINK("http://evil")', "+cmd|' /C calc'!A0", "plain"]
    pid = create_project(app_client, accounts, classes=classes)["id"]
    for s, ext in enumerate(("=1+1", "@SUM(A1)", "-2+3", "ok")):
        upload_png(app_client, accounts, pid, seed=s, external_id=ext)
    rows = [
        {"external_id": ext, "annotator": "crowd", "class_index": k}
        for ext, k in (("=1+1", 0), ("@SUM(A1)", 1), ("-2+3", 2), ("ok", 0))
    ]
    r = app_client.post(f"/api/v1/projects/{pid}/annotations:import", json=rows, headers=h)
    assert r.status_code == 200, r.text
    text = app_client.get(
        f"/api/v1/projects/{pid}/export", params={"format": "csv"}, headers=h
    ).text
    table = list(csv.DictReader(io.StringIO(text)))
    assert len(table) == 4
    for row in table:
        for value in row.values():
            assert not value.startswith(("=", "+", "-", "@", "\t", "\r")), row
    by_id = {row["external_id"]: row for row in table}
    assert set(by_id) == {"'=1+1", "'@SUM(A1)", "'-2+3", "ok"}
    assert by_id["'=1+1"]["label"] == "'" + classes[0]
    assert by_id["ok"]["label"] == "'" + classes[0]
    exported = app_client.get(
        f"/api/v1/projects/{pid}/export", params={"format": "json"}, headers=h
    ).json()
    assert {row["external_id"] for row in exported} == {"=1+1", "@SUM(A1)", "-2+3", "ok"}
