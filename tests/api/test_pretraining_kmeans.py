"""The second pretraining method (``method: "patch_kmeans"``) and a finished run used as a
frozen backbone (``{"name": "pretrained", "hparams": {"backbone": "pretraining"}}``): request
validation (422 naming the key, nothing stored) and the run a cycle records. The worker side is
in ``tests/integration/test_kmeans_worker.py``."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from app.core.enums import PretrainingStatus
from app.pretraining.models import Pretraining
from tests.api.helpers import SMALL_CNN, create_project, upload_png
from tests.conftest import Accounts, row_counts

KMEANS = {"method": "patch_kmeans", "centroids": 8, "patches": 500, "seed": 2}
FROZEN = {
    "name": "pretrained",
    "input_shape": [1, 28, 28],
    "hparams": {"backbone": "pretraining", "epochs": 1},
}


def _project(
    client: TestClient, accounts: Accounts, spec: dict[str, Any], name: str = "digits"
) -> int:
    pid = int(create_project(client, accounts, model_spec=spec, name=name)["id"])
    for k in range(3):
        upload_png(client, accounts, pid, seed=k)
    return pid


def _start(client: TestClient, accounts: Accounts, pid: int, body: dict[str, Any]) -> Any:
    return client.post(
        f"/api/v1/projects/{pid}/pretraining", json=body, headers=accounts.h("engineer")
    )


def _finish(factory: sessionmaker[Session], run_id: int, sha: str) -> None:
    """What the worker leaves behind when a k-means run is done."""
    with factory() as db:
        db.execute(
            update(Pretraining)
            .where(Pretraining.id == run_id)
            .values(status=PretrainingStatus.done, epochs_done=1, checkpoint_sha256=sha)
        )
        db.commit()


def test_a_kmeans_run_records_its_settings_and_image_shape(
    app_client: TestClient, accounts: Accounts
) -> None:
    pid = _project(app_client, accounts, SMALL_CNN)
    r = _start(app_client, accounts, pid, {"method": "patch_kmeans"})
    assert r.status_code == 202, r.text
    run = r.json()
    assert (run["method"], run["epochs_done"], run["epochs"], run["losses"]) == (
        "patch_kmeans",
        0,
        1,
        [],
    )
    params = run["params"]
    assert params == {
        "method": "patch_kmeans",
        "patch": 6,
        "centroids": 800,
        "patches": 100_000,
        "iterations": 10,
        "seed": params["seed"],
        "model": {"name": "patch_kmeans", "input_shape": [1, 28, 28]},
    }
    sent = app_client.app.state.task_sender.sent  # type: ignore[attr-defined]
    assert list(sent) == [("annoloop.pretraining.run", [run["id"]], "train")]
    # SimCLR stays the default, and says so.
    app_client.post(
        f"/api/v1/projects/{pid}/pretraining/{run['id']}/cancel", headers=accounts.h("engineer")
    )
    simclr = _start(app_client, accounts, pid, {"epochs": 2}).json()
    assert (simclr["method"], simclr["params"]["method"], simclr["epochs"]) == ("simclr",) * 2 + (
        2,
    )


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ({**KMEANS, "patch": 1}, "patch"),
        ({**KMEANS, "patch": 17}, "patch"),
        ({**KMEANS, "patch": 15}, "patch"),  # 28x28 images hold no two 15x15 patches a side
        ({**KMEANS, "centroids": 1}, "centroids"),
        ({**KMEANS, "centroids": 10**6}, "centroids"),
        ({**KMEANS, "patches": 10}, "patches"),
        ({**KMEANS, "patches": 10**7}, "patches"),
        ({**KMEANS, "iterations": 0}, "iterations"),
        ({**KMEANS, "epochs": 3}, "epochs"),  # a SimCLR setting given to k-means
        ({**KMEANS, "temperature": 0.5}, "temperature"),
        ({"patch": 6}, "patch"),  # a k-means setting given to SimCLR (the default)
        ({"method": "simclr", "centroids": 8}, "centroids"),
        ({"method": "byol"}, "method"),
        ({**KMEANS, "kmeans": True}, "kmeans"),
    ],
)
def test_bad_input_is_a_422_naming_the_key_and_stores_nothing(
    app_client: TestClient,
    accounts: Accounts,
    factory: sessionmaker[Session],
    body: dict[str, Any],
    key: str,
) -> None:
    pid = _project(app_client, accounts, SMALL_CNN)
    before = row_counts(factory)
    r = _start(app_client, accounts, pid, body)
    assert r.status_code == 422, r.text
    assert key in r.json()["error"]["message"]
    assert row_counts(factory) == before


def test_kmeans_needs_images(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    spec = {"name": "mlp", "input_shape": [8], "hparams": {"epochs": 1}}
    pid = int(create_project(app_client, accounts, model_spec=spec)["id"])
    before = row_counts(factory)
    r = _start(app_client, accounts, pid, KMEANS)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "pretraining_unsupported"
    assert row_counts(factory) == before


def test_a_frozen_pretraining_backbone_uses_the_latest_fitting_run(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    pid = _project(app_client, accounts, FROZEN)  # one channel: allowed for a run's encoder
    h = accounts.h("engineer")
    cycles = f"/api/v1/projects/{pid}/cycles"
    r = app_client.post(cycles, json={}, headers=h)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "no_pretraining"
    # SimCLR trains a model's body, and this model has none of its own: it must name one.
    r = _start(app_client, accounts, pid, {})
    assert (r.status_code, r.json()["error"]["detail"]) == (422, {"key": "architecture"})
    first = _start(app_client, accounts, pid, KMEANS).json()
    _finish(factory, first["id"], "aa" * 32)
    second = _start(app_client, accounts, pid, KMEANS).json()
    _finish(factory, second["id"], "bb" * 32)
    third = _start(app_client, accounts, pid, KMEANS).json()  # fitted on other images: no
    other = {**third["params"], "model": {"name": "patch_kmeans", "input_shape": [1, 32, 32]}}
    with factory() as db:
        db.execute(update(Pretraining).where(Pretraining.id == third["id"]).values(params=other))
        db.commit()
    _finish(factory, third["id"], "cc" * 32)
    r = app_client.post(cycles, json={}, headers=h)
    assert r.status_code == 202, r.text
    assert (r.json()["pretraining_id"], r.json()["pretraining_sha256"]) == (
        second["id"],
        "bb" * 32,
    )


def test_a_kmeans_run_cannot_be_fine_tuned_nor_start_a_body(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    h = accounts.h("engineer")
    tuned = {**FROZEN, "hparams": {**FROZEN["hparams"], "frozen": False}}
    for spec, code in [
        (tuned, "pretraining_frozen_only"),
        ({**SMALL_CNN, "hparams": {"init": "pretraining"}}, "no_pretraining"),
    ]:
        pid = _project(app_client, accounts, spec, name=code)
        run = _start(app_client, accounts, pid, KMEANS).json()
        _finish(factory, run["id"], "dd" * 32)
        before = row_counts(factory)
        r = app_client.post(f"/api/v1/projects/{pid}/cycles", json={}, headers=h)
        assert r.status_code == 422, r.text
        assert r.json()["error"]["code"] == code
        assert row_counts(factory) == before


def test_the_resolved_run_is_not_the_projects_to_set(
    app_client: TestClient, accounts: Accounts
) -> None:
    run = {"sha256": "ee" * 32, "model": {"name": "patch_kmeans", "input_shape": [1, 28, 28]}}
    spec = {**FROZEN, "hparams": {**FROZEN["hparams"], "pretraining": run}}
    body = {"name": "x", "classes": ["a", "b"], "model_spec": spec}
    r = app_client.post("/api/v1/projects", json=body, headers=accounts.h("engineer"))
    assert r.status_code == 422, r.text
    assert "hparams.pretraining" in r.json()["error"]["message"]


def test_a_simclr_run_of_a_named_body_serves_a_frozen_backbone(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    pid = _project(app_client, accounts, FROZEN)
    r = _start(app_client, accounts, pid, {"epochs": 2, "architecture": "small_cnn"})
    assert r.status_code == 202, r.text
    run = r.json()
    assert run["method"] == "simclr"
    # The body key a small_cnn project of this shape records: what cycles rebuild.
    assert run["params"]["model"] == {"name": "small_cnn", "input_shape": [1, 28, 28]}
    assert "architecture" not in run["params"]
    _finish(factory, run["id"], "ab" * 32)
    r = app_client.post(f"/api/v1/projects/{pid}/cycles", json={}, headers=accounts.h("engineer"))
    assert r.status_code == 202, r.text
    assert (r.json()["pretraining_id"], r.json()["pretraining_sha256"]) == (run["id"], "ab" * 32)


@pytest.mark.parametrize(
    ("spec", "body"),
    [
        (FROZEN, {}),  # a pretrained model has no body to train
        (FROZEN, {"architecture": "mlp"}),  # not an image body
        (FROZEN, {"architecture": "vit"}),
        (FROZEN, {**KMEANS, "architecture": "small_cnn"}),  # SimCLR's only
        (SMALL_CNN, {"architecture": "resnet18"}),  # not the project's body
        ({"name": "mlp", "input_shape": [8]}, {"architecture": "small_cnn"}),
    ],
)
def test_a_bad_architecture_is_a_422_naming_it_and_stores_nothing(
    app_client: TestClient,
    accounts: Accounts,
    factory: sessionmaker[Session],
    spec: dict[str, Any],
    body: dict[str, Any],
) -> None:
    if spec["name"] == "mlp":  # no pool: the architecture is refused before it is counted
        pid = int(create_project(app_client, accounts, model_spec=spec)["id"])
    else:
        pid = _project(app_client, accounts, spec)
    before = row_counts(factory)
    r = _start(app_client, accounts, pid, body)
    assert r.status_code == 422, r.text
    assert "architecture" in r.json()["error"]["message"]
    assert row_counts(factory) == before


def test_the_projects_own_architecture_may_be_named(
    app_client: TestClient, accounts: Accounts
) -> None:
    pid = _project(app_client, accounts, SMALL_CNN)
    r = _start(app_client, accounts, pid, {"architecture": "small_cnn"})
    assert r.status_code == 202, r.text
    assert r.json()["params"]["model"] == {"name": "small_cnn", "input_shape": [1, 28, 28]}
