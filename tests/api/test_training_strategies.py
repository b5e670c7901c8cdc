"""Issue 18's strategies at the API: learning loss on a network that cannot carry its module,
an ensemble of the wrong size, a bad CEAL option and BGADL without image inputs or dropout
are refused (BGADL also at project creation and PATCH), with the reason, storing nothing;
good ones start, VAAL on an mlp among them."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from tests.api.helpers import create_project
from tests.conftest import Accounts, row_counts

MLP = {"name": "mlp", "input_shape": [6]}


def test_learning_loss_on_an_mlp_is_refused_with_the_reason(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    h = accounts.h("engineer")
    pid = create_project(app_client, accounts, model_spec=MLP, classes=["a", "b"])["id"]
    before = row_counts(factory)
    r = app_client.post(
        f"/api/v1/projects/{pid}/cycles", json={"strategy": "learning_loss"}, headers=h
    )
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "strategy_needs"
    assert error["detail"] == {"need": "loss_module", "strategy": "learning_loss"}
    assert "loss-prediction module" in error["message"]
    assert "mlp" in error["message"]
    assert row_counts(factory) == before
    # The default small CNN carries it.
    cnn = create_project(app_client, accounts, name="cnn", strategy="learning_loss")["id"]
    r = app_client.post(f"/api/v1/projects/{cnn}/cycles", json={}, headers=h)
    assert r.status_code == 202, r.text
    assert r.json()["strategy"] == "learning_loss"


def test_ensemble_and_ceal_options_are_checked(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    h = accounts.h("engineer")
    pid = create_project(app_client, accounts, strategy="ensemble_vote_entropy")["id"]
    before = row_counts(factory)
    for params, key in (
        ({"members": 1}, "members"),
        ({"members": 21}, "members"),
        ({"members": 3, "ceal": {"decay": -1}}, "ceal.decay"),
        ({"ceal": {"delta": "0.1"}}, "ceal.delta"),
    ):
        r = app_client.post(f"/api/v1/projects/{pid}/cycles", json={"params": params}, headers=h)
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert (error["code"], error["detail"]["key"]) == ("invalid_params", key), error
    assert row_counts(factory) == before
    r = app_client.post(
        f"/api/v1/projects/{pid}/cycles",
        json={"params": {"members": 3, "ceal": {"delta": 0.1}}},
        headers=h,
    )
    assert r.status_code == 202, r.text
    assert r.json()["params"] == {
        "members": 3,
        "ceal": {"delta": 0.1, "decay": 0.00033, "max_items": None},
    }


CNN_NO_DROPOUT = {"name": "small_cnn", "input_shape": [1, 28, 28], "hparams": {"dropout": 0.0}}


def _needs(r: Any, need: str) -> None:
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "strategy_needs", error
    assert error["detail"] == {"need": need, "strategy": "bgadl"}


def test_bgadl_needs_images_and_dropout_everywhere_it_can_be_chosen(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    h = accounts.h("engineer")
    pids = {}
    for spec, need in (
        ({**MLP, "hparams": {"dropout": 0.0}}, "dropout"),  # both unmet: the first is named
        (MLP, "image_input"),  # mlp's default dropout 0.5: only the images are missing
        (CNN_NO_DROPOUT, "dropout"),
    ):
        pid = create_project(
            app_client, accounts, name=f"p{len(pids)}", model_spec=spec, classes=["a", "b"]
        )["id"]
        pids[pid] = need
    before = row_counts(factory)
    for pid, need in pids.items():
        r = app_client.post(f"/api/v1/projects/{pid}/cycles", json={"strategy": "bgadl"}, headers=h)
        _needs(r, need)
        r = app_client.patch(f"/api/v1/projects/{pid}", json={"strategy": "bgadl"}, headers=h)
        _needs(r, need)
    for spec, need in ((MLP, "image_input"), (CNN_NO_DROPOUT, "dropout")):
        r = app_client.post(
            "/api/v1/projects",
            json={"name": "new", "classes": ["a", "b"], "model_spec": spec, "strategy": "bgadl"},
            headers=h,
        )
        _needs(r, need)
    assert row_counts(factory) == before
    assert not app_client.app.state.task_sender.sent  # type: ignore[attr-defined]
    # The default small CNN (dropout 0.5, images) takes it.
    cnn = create_project(app_client, accounts, name="cnn", strategy="bgadl")["id"]
    r = app_client.post(f"/api/v1/projects/{cnn}/cycles", json={}, headers=h)
    assert r.status_code == 202, r.text
    assert r.json()["strategy"] == "bgadl"


def test_vaal_on_an_mlp_is_accepted(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    # VAAL trains an MLP VAE on feature vectors: it needs nothing of the task model.
    h = accounts.h("engineer")
    pid = create_project(app_client, accounts, model_spec=MLP, classes=["a", "b"], strategy="vaal")[
        "id"
    ]
    r = app_client.post(f"/api/v1/projects/{pid}/cycles", json={}, headers=h)
    assert r.status_code == 202, r.text
    assert r.json()["strategy"] == "vaal"
    other = create_project(app_client, accounts, name="m2", model_spec=MLP, classes=["a", "b"])
    r = app_client.patch(f"/api/v1/projects/{other['id']}", json={"strategy": "vaal"}, headers=h)
    assert r.status_code == 200, r.text
    r = app_client.post(
        f"/api/v1/projects/{other['id']}/cycles",
        json={"strategy": "vaal", "params": {"width": 4, "epochs": 1}},
        headers=h,
    )
    assert r.status_code == 202, r.text
