"""Issue 17.4: the strategy list is served by the API (the dashboard reads it), and issue 18:
a strategy whose needs the project's model cannot meet is refused with the reason, at cycle
creation (and at project creation and PATCH), storing nothing."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from tests.api.helpers import create_project
from tests.conftest import Accounts, row_counts
from worker.ml.strategies import available_strategies, strategy_docs
from worker.ml.strategy_params import MAX_CANDIDATES, MAX_MC_SAMPLES, MAX_NUM_SAMPLES

RESNET = {"name": "resnet18", "input_shape": [3, 32, 32]}  # dropout 0 by default


def test_the_list_is_every_registered_strategy_with_its_parameters(
    app_client: TestClient, accounts: Accounts
) -> None:
    r = app_client.get("/api/v1/strategies", headers=accounts.h("annotator"))
    assert r.status_code == 200, r.text
    listed = r.json()
    acquire = {s["name"]: s for s in listed if s["kind"] == "acquire"}
    clean = {s["name"] for s in listed if s["kind"] == "clean"}
    assert set(acquire) == set(available_strategies())
    assert clean == {"ce_minus_entropy", "joint", "random", "activelab"}
    for name, doc in strategy_docs().items():
        served = {k: v["default"] for k, v in acquire[name]["params"].items()}
        assert served == doc["params"], name
    bald = acquire["bald"]
    assert bald["params"]["mc_samples"]["maximum"] == MAX_MC_SAMPLES
    assert bald["params"]["mc_samples"]["minimum"] == 2
    assert bald["params"]["mc_samples"]["type"] == "integer"
    assert "dropout" in bald["needs"][0]
    ns = acquire["noise_stability"]["params"]
    assert ns["num_samples"]["maximum"] == MAX_NUM_SAMPLES
    assert ns["zeta"]["exclusiveMinimum"] == 0.0
    cand = acquire["entropy"]["params"]["candidates"]
    assert (cand["nullable"], cand["maximum"]) == (True, MAX_CANDIDATES)
    assert acquire["entropy"]["needs"] == []


def test_the_list_needs_a_token(app_client: TestClient) -> None:
    assert app_client.get("/api/v1/strategies").status_code == 401


def _refused(r: Any) -> dict[str, Any]:
    assert r.status_code == 422, r.text
    error = dict(r.json()["error"])
    assert "dropout" in error["message"], error
    return error


def test_bald_on_a_model_without_dropout_is_refused_at_cycle_creation(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    h = accounts.h("engineer")
    pid = create_project(app_client, accounts, model_spec=RESNET, classes=["a", "b"])["id"]
    before = row_counts(factory)
    r = app_client.post(f"/api/v1/projects/{pid}/cycles", json={"strategy": "bald"}, headers=h)
    error = _refused(r)
    assert error["code"] == "strategy_needs"
    assert error["detail"] == {"need": "dropout", "strategy": "bald"}
    # PATCHing the project to bald is refused the same way.
    r = app_client.patch(f"/api/v1/projects/{pid}", json={"strategy": "bald"}, headers=h)
    assert _refused(r)["code"] == "strategy_needs"
    assert row_counts(factory) == before
    assert not app_client.app.state.task_sender.sent  # type: ignore[attr-defined]
    # Other strategies still start on this model.
    r = app_client.post(f"/api/v1/projects/{pid}/cycles", json={"strategy": "margin"}, headers=h)
    assert r.status_code == 202, r.text


def test_bald_with_dropout_starts_and_project_creation_refuses_without(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    with_dropout = {**RESNET, "hparams": {"dropout": 0.25}}
    pid = create_project(
        app_client, accounts, model_spec=with_dropout, classes=["a", "b"], strategy="bald"
    )["id"]
    r = app_client.post(f"/api/v1/projects/{pid}/cycles", json={}, headers=accounts.h("engineer"))
    assert r.status_code == 202, r.text
    before = row_counts(factory)
    r = app_client.post(
        "/api/v1/projects",
        json={"name": "r", "classes": ["a", "b"], "model_spec": RESNET, "strategy": "bald"},
        headers=accounts.h("engineer"),
    )
    error = _refused(r)
    assert error["code"] == "strategy_needs"
    assert error["detail"] == {"need": "dropout", "strategy": "bald"}
    assert row_counts(factory) == before
