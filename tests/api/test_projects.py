from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from tests.api.helpers import CLASSES, SMALL_CNN, add_member, create_project
from tests.conftest import Accounts, row_counts


def test_engineer_creates_gets_lists_and_updates_a_project(
    app_client: TestClient, accounts: Accounts
) -> None:
    project = create_project(app_client, accounts, label_budget=500, batch_size=20)
    assert project["classes"] == CLASSES
    assert project["model_spec"]["num_classes"] == 10
    assert project["labels_per_item"] == 1
    h = accounts.h("engineer")
    got = app_client.get(f"/api/v1/projects/{project['id']}", headers=h).json()
    assert got == project
    listed = app_client.get("/api/v1/projects", headers=h).json()
    assert [p["id"] for p in listed] == [project["id"]]
    r = app_client.patch(
        f"/api/v1/projects/{project['id']}",
        json={"strategy": "margin", "labels_per_item": 3, "auto_advance": True},
        headers=h,
    )
    assert r.status_code == 200, r.text
    assert (r.json()["strategy"], r.json()["labels_per_item"], r.json()["auto_advance"]) == (
        "margin",
        3,
        True,
    )


def test_invalid_projects_are_refused(app_client: TestClient, accounts: Accounts) -> None:
    h = accounts.h("engineer")
    bad = [
        {"name": "x", "classes": ["a"], "model_spec": SMALL_CNN},  # one class
        {"name": "x", "classes": ["a", "a"], "model_spec": SMALL_CNN},  # duplicate class
        {"name": "x", "classes": CLASSES, "model_spec": SMALL_CNN, "strategy": "magic"},
        {"name": "x", "classes": CLASSES, "model_spec": {"name": "vgg", "input_shape": [1]}},
        {
            "name": "x",
            "classes": CLASSES,
            "model_spec": {"name": "resnet18", "input_shape": [1, 28, 28]},
        },
        *(
            {"name": "x", "classes": CLASSES, "model_spec": {"name": "small_cnn", "input_shape": s}}
            for s in ([2, 28, 28], [1, 8, 28], [3, 32, 4096])
        ),
    ]
    for body in bad:
        r = app_client.post("/api/v1/projects", json=body, headers=h)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["error"]["code"] == "invalid"
    create_project(app_client, accounts)
    dup = app_client.post(
        "/api/v1/projects",
        json={"name": "digits", "classes": CLASSES, "model_spec": SMALL_CNN},
        headers=h,
    )
    assert dup.status_code == 409
    assert dup.json()["error"]["code"] == "duplicate_name"
    colour = {"name": "small_cnn", "input_shape": [3, 32, 32]}  # CIFAR-sized, converted by worker
    r = app_client.post(
        "/api/v1/projects",
        json={"name": "colour", "classes": CLASSES, "model_spec": colour},
        headers=h,
    )
    assert r.status_code == 201, r.text


def test_visibility_follows_membership(app_client: TestClient, accounts: Accounts) -> None:
    project = create_project(app_client, accounts)
    pid = project["id"]
    # Not a member yet: the project looks like it does not exist.
    r = app_client.get(f"/api/v1/projects/{pid}", headers=accounts.h("annotator"))
    assert r.status_code == 404
    assert app_client.get("/api/v1/projects", headers=accounts.h("annotator")).json() == []
    add_member(app_client, accounts, pid, "annotator")
    r = app_client.get(f"/api/v1/projects/{pid}", headers=accounts.h("annotator"))
    assert r.status_code == 200
    # Members who are annotators still cannot change the project or read its item list.
    r = app_client.patch(
        f"/api/v1/projects/{pid}", json={"batch_size": 5}, headers=accounts.h("annotator")
    )
    assert r.status_code == 403
    r = app_client.get(f"/api/v1/projects/{pid}/items", headers=accounts.h("annotator"))
    assert r.status_code == 403
    # The outsider still sees nothing; the admin sees everything.
    assert app_client.get("/api/v1/projects", headers=accounts.h("outsider")).json() == []
    admin_view = app_client.get("/api/v1/projects", headers=accounts.h("admin")).json()
    assert [p["id"] for p in admin_view] == [pid]


def test_annotators_cannot_create_projects(app_client: TestClient, accounts: Accounts) -> None:
    r = app_client.post(
        "/api/v1/projects",
        json={"name": "mine", "classes": CLASSES, "model_spec": SMALL_CNN},
        headers=accounts.h("annotator"),
    )
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "forbidden"


def test_model_settings_the_worker_would_refuse_are_refused_at_creation(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    """Issues 15 and 17: hparams are checked by the worker's own (torch-free) validation,
    with caps, when the project is created; the 422 names the key."""
    before = row_counts(factory)
    for hparams, key in (
        ({"epochs": 10**7}, "epochs"),
        ({"epochs": 0}, "epochs"),
        ({"lr": "fast"}, "lr"),
        ({"lrr": 0.1}, "lrr"),
        ({"hidden_sizes": [10**9]}, "hidden_sizes"),
        ({"batch_size": 10**6}, "batch_size"),
    ):
        spec = {"name": "mlp", "input_shape": [8], "hparams": hparams}
        r = app_client.post(
            "/api/v1/projects",
            json={"name": "p", "classes": ["a", "b"], "model_spec": spec},
            headers=accounts.h("engineer"),
        )
        assert r.status_code == 422, (hparams, r.text)
        assert key in r.text, (key, r.text)
    assert row_counts(factory) == before
