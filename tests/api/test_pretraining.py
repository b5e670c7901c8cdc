"""The pretraining API: start (validated, one at a time), progress, cancel, and a cycle that
starts from the latest finished run (``hparams.init = "pretraining"``). The worker side is in
``tests/integration/test_pretraining_worker.py``."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from app.core.enums import PretrainingStatus
from app.cycles.reconcile import Reconciler
from app.pretraining.models import Pretraining
from tests.api.helpers import SMALL_CNN, create_project, upload_png
from tests.conftest import Accounts, row_counts

BODY = {"epochs": 2, "batch_size": 8, "lr": 0.01, "temperature": 0.2, "seed": 5}


def _project(client: TestClient, accounts: Accounts, items: int = 3, **spec: Any) -> int:
    pid = int(create_project(client, accounts, model_spec={**SMALL_CNN, **spec})["id"])
    for k in range(items):
        upload_png(client, accounts, pid, seed=k)
    return pid


def _finish(factory: sessionmaker[Session], run_id: int, sha: str = "ab" * 32) -> None:
    """What the worker leaves behind when a run is done."""
    with factory() as db:
        db.execute(
            update(Pretraining)
            .where(Pretraining.id == run_id)
            .values(
                status=PretrainingStatus.done,
                epochs_done=2,
                losses=[3.0, 2.5],
                checkpoint_sha256=sha,
            )
        )
        db.commit()


def test_start_list_and_one_at_a_time(app_client: TestClient, accounts: Accounts) -> None:
    pid = _project(app_client, accounts)
    h = accounts.h("engineer")
    r = app_client.post(f"/api/v1/projects/{pid}/pretraining", json=BODY, headers=h)
    assert r.status_code == 202, r.text
    run = r.json()
    assert (run["status"], run["epochs_done"], run["epochs"], run["last_loss"]) == (
        "queued",
        0,
        2,
        None,
    )
    assert run["params"]["seed"] == 5
    assert run["params"]["model"] == {"name": "small_cnn", "input_shape": [1, 28, 28]}
    sent = app_client.app.state.task_sender.sent  # type: ignore[attr-defined]
    assert list(sent) == [("annoloop.pretraining.run", [run["id"]], "train")]

    again = app_client.post(f"/api/v1/projects/{pid}/pretraining", json={}, headers=h)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "pretraining_running"
    assert len(sent) == 1

    listed = app_client.get(f"/api/v1/projects/{pid}/pretraining", headers=h).json()
    assert [x["id"] for x in listed] == [run["id"]]
    one = app_client.get(f"/api/v1/projects/{pid}/pretraining/{run['id']}", headers=h)
    assert one.json()["status"] == "queued"


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ({"epochs": 0}, "epochs"),
        ({"epochs": 10**6}, "epochs"),
        ({"batch_size": 1}, "batch_size"),
        ({"lr": 0}, "lr"),
        ({"temperature": -1}, "temperature"),
        ({"seed": -3}, "seed"),
        ({"epoch": 3}, "epoch"),
    ],
)
def test_bad_input_is_a_422_naming_the_key_and_stores_nothing(
    app_client: TestClient,
    accounts: Accounts,
    factory: sessionmaker[Session],
    body: dict[str, Any],
    key: str,
) -> None:
    pid = _project(app_client, accounts)
    before = row_counts(factory)
    r = app_client.post(
        f"/api/v1/projects/{pid}/pretraining", json=body, headers=accounts.h("engineer")
    )
    assert r.status_code == 422, r.text
    assert key in r.json()["error"]["message"]
    assert row_counts(factory) == before


def test_who_may_and_what_pool(app_client: TestClient, accounts: Accounts) -> None:
    pid = _project(app_client, accounts, items=1)
    url = f"/api/v1/projects/{pid}/pretraining"
    assert app_client.post(url, json={}, headers=accounts.h("annotator")).status_code == 403
    assert app_client.get(url, headers=accounts.h("annotator")).status_code == 403
    r = app_client.post(url, json={}, headers=accounts.h("engineer"))
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "pool_too_small"
    assert app_client.post(url, json={}, headers=accounts.h("admin")).status_code == 422


def test_cancel_then_start_again(app_client: TestClient, accounts: Accounts) -> None:
    pid = _project(app_client, accounts)
    h = accounts.h("engineer")
    run = app_client.post(f"/api/v1/projects/{pid}/pretraining", json={}, headers=h).json()
    url = f"/api/v1/projects/{pid}/pretraining/{run['id']}/cancel"
    r = app_client.post(url, headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled"
    assert r.json()["finished_at"] is not None
    assert app_client.post(url, headers=h).status_code == 409
    r = app_client.post(f"/api/v1/projects/{pid}/pretraining", json={}, headers=h)
    assert r.status_code == 202


def test_a_cycle_starts_from_the_latest_finished_run(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    pid = _project(app_client, accounts, hparams={"init": "pretraining", "epochs": 1})
    h = accounts.h("engineer")
    cycles = f"/api/v1/projects/{pid}/cycles"
    r = app_client.post(cycles, json={}, headers=h)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "no_pretraining"

    first = app_client.post(f"/api/v1/projects/{pid}/pretraining", json={}, headers=h).json()
    _finish(factory, first["id"], "aa" * 32)
    second = app_client.post(f"/api/v1/projects/{pid}/pretraining", json={}, headers=h).json()
    _finish(factory, second["id"], "bb" * 32)
    listed = app_client.get(f"/api/v1/projects/{pid}/pretraining", headers=h).json()
    assert [(x["status"], x["epochs_done"], x["last_loss"]) for x in listed] == [
        ("done", 2, 2.5),
        ("done", 2, 2.5),
    ]

    r = app_client.post(cycles, json={}, headers=h)
    assert r.status_code == 202, r.text
    assert (r.json()["pretraining_id"], r.json()["pretraining_sha256"]) == (
        second["id"],
        "bb" * 32,
    )


def test_init_is_validated_with_the_model_spec(app_client: TestClient, accounts: Accounts) -> None:
    body = {
        "name": "x",
        "classes": ["a", "b"],
        "model_spec": {**SMALL_CNN, "hparams": {"init": "imagenet"}},
    }
    r = app_client.post("/api/v1/projects", json=body, headers=accounts.h("engineer"))
    assert r.status_code == 422
    assert "init" in r.json()["error"]["message"]


def test_a_run_of_another_architecture_does_not_count(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    pid = _project(app_client, accounts, hparams={"init": "pretraining"})
    h = accounts.h("engineer")
    run = app_client.post(f"/api/v1/projects/{pid}/pretraining", json={}, headers=h).json()
    _finish(factory, run["id"])
    other = {**run["params"], "model": {"name": "small_cnn", "input_shape": [1, 16, 16]}}
    with factory() as db:  # a run of a model spec the project had before (same shapes: kept)
        db.execute(update(Pretraining).where(Pretraining.id == run["id"]).values(params=other))
        db.commit()
    r = app_client.post(f"/api/v1/projects/{pid}/cycles", json={}, headers=h)
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "no_pretraining"


def test_a_queued_run_whose_task_was_lost_is_sent_again(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    """The API's sweep (``app.cycles.reconcile``) re-sends a run nobody claimed (a late copy
    cannot take over a run begun: ``worker.pipeline.pretrain``); a running one it leaves to
    the broker's redelivery (or ``worker/recovery.py`` on the embedded broker)."""
    pid = _project(app_client, accounts)
    h = accounts.h("engineer")
    run = app_client.post(f"/api/v1/projects/{pid}/pretraining", json={}, headers=h).json()
    now = [0.0]
    sent: list[Any] = []

    class Sender:
        def send(self, name: str, args: list[Any], queue: str) -> None:
            sent.append((name, args, queue))

    sweep = Reconciler(factory, Sender(), grace_s=5, clock=lambda: now[0]).sweep
    assert sweep() == []  # first seen: within the grace period
    now[0] = 6
    assert sweep() == [("annoloop.pretraining.run", [run["id"]], "train")]
    with factory() as db:
        db.execute(
            update(Pretraining)
            .where(Pretraining.id == run["id"])
            .values(status=PretrainingStatus.running)
        )
        db.commit()
    now[0] = 20
    assert sweep() == []
