"""Issue 18's strategies at the API: learning loss on a network that cannot carry its module,
an ensemble of the wrong size and a bad CEAL option are refused when the cycle is created,
with the reason, storing nothing; good ones start."""

from __future__ import annotations

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
