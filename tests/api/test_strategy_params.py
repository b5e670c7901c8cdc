"""Issues 15 and 17: strategy parameters are checked at the API by the worker's own rule
(worker/ml/strategy_params.py) — unknown keys, wrong types and values over the caps answer 422
naming the key, and nothing is stored — at POST /projects, PATCH /projects/{id} and
POST /projects/{id}/cycles."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from tests.api.helpers import create_project
from tests.conftest import Accounts, row_counts

# (params, strategy, the key the 422 must name)
BAD_ACQUISITION: list[tuple[dict[str, Any], str, str]] = [
    ({"bogus": 1}, "entropy", "bogus"),
    ({"num_samples": 10**9}, "noise_stability", "num_samples"),
    ({"zeta": 2.0}, "noise_stability", "zeta"),
    ({"mc_samples": "x"}, "bald", "mc_samples"),
    ({"mc_samples": 1}, "bald", "mc_samples"),
    ({"mc_samples": 5.0}, "bald", "mc_samples"),
    ({"candidates": 10**8}, "entropy", "candidates"),
    ({"candidates": True}, "margin", "candidates"),
    ({"mc_samples": 5}, "entropy", "mc_samples"),  # bald's parameter, not entropy's
    # issue 18's strategies
    ({"scope": "last"}, "egl", "scope"),
    ({"reference": 0}, "emoc", "reference"),
    ({"members": 10**6}, "suggestive", "members"),
    ({"weight_decay": 1e9}, "suggestive", "weight_decay"),
    ({"max_epochs": 10**9}, "discriminative", "max_epochs"),
    ({"mini_queries": 0}, "discriminative", "mini_queries"),
    ({"k_nn": 0}, "typiclust", "k_nn"),
    ({"embedding": "pixels"}, "typiclust", "embedding"),
    ({"delta": -1.0}, "probcover", "delta"),
    ({"purity": 1.5}, "probcover", "purity"),
    ({"k_nn": 5}, "probcover", "k_nn"),  # typiclust's parameter, not probcover's
    ({"generator": "gan"}, "bgadl", "generator"),
    ({"generator": 1}, "bgadl", "generator"),
]


def _error(r: Any, key: str) -> dict[str, Any]:
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert key in error["message"], (key, error)
    return dict(error)


def test_project_creation_refuses_bad_strategy_params(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    before = row_counts(factory)
    for params, strategy, key in BAD_ACQUISITION:
        r = app_client.post(
            "/api/v1/projects",
            json={
                "name": "p",
                "classes": ["a", "b"],
                "model_spec": {"name": "mlp", "input_shape": [4]},
                "strategy": strategy,
                "strategy_params": params,
            },
            headers=accounts.h("engineer"),
        )
        assert _error(r, key)["code"] == "invalid", (params, r.text)
    for params, key in (({"folds": 1}, "folds"), ({"candidates": 5}, "candidates")):
        r = app_client.post(
            "/api/v1/projects",
            json={
                "name": "c",
                "kind": "clean",
                "classes": ["a", "b"],
                "model_spec": {"name": "mlp", "input_shape": [4]},
                "strategy_params": params,
            },
            headers=accounts.h("engineer"),
        )
        _error(r, key)
    assert row_counts(factory) == before


def test_project_creation_keeps_valid_params(app_client: TestClient, accounts: Accounts) -> None:
    params = {"num_samples": 1000, "zeta": 1, "candidates": 10**7}
    project = create_project(
        app_client, accounts, strategy="noise_stability", strategy_params=params
    )
    assert project["strategy_params"] == params
    clean = create_project(
        app_client, accounts, name="c", kind="clean", strategy_params={"folds": 0}
    )
    assert clean["strategy_params"] == {"folds": 0}


def test_patch_checks_params_against_the_strategy_it_leaves(
    app_client: TestClient, accounts: Accounts
) -> None:
    project = create_project(
        app_client, accounts, strategy="bald", strategy_params={"mc_samples": 10}
    )
    url, h = f"/api/v1/projects/{project['id']}", accounts.h("engineer")
    for body, key in (
        ({"strategy_params": {"bogus": 1}}, "bogus"),
        ({"strategy_params": {"mc_samples": "x"}}, "mc_samples"),
        ({"strategy_params": {"mc_samples": 10**6}}, "mc_samples"),
        # entropy takes no mc_samples: a new strategy must fit the params it keeps.
        ({"strategy": "entropy"}, "mc_samples"),
        ({"strategy": "noise_stability", "strategy_params": {"mc_samples": 5}}, "mc_samples"),
    ):
        error = _error(app_client.patch(url, json=body, headers=h), key)
        assert error["code"] == "invalid_params", error
        assert error["detail"]["key"] == key, error
    unchanged = app_client.get(url, headers=h).json()
    assert (unchanged["strategy"], unchanged["strategy_params"]) == ("bald", {"mc_samples": 10})

    r = app_client.patch(url, json={"strategy": "entropy", "strategy_params": {}}, headers=h)
    assert r.status_code == 200, r.text
    r = app_client.patch(url, json={"strategy_params": {"candidates": 500}}, headers=h)
    assert r.status_code == 200, r.text
    assert (r.json()["strategy"], r.json()["strategy_params"]) == ("entropy", {"candidates": 500})


@pytest.mark.parametrize(("params", "strategy", "key"), BAD_ACQUISITION)
def test_cycle_start_refuses_bad_params(
    app_client: TestClient,
    accounts: Accounts,
    factory: sessionmaker[Session],
    params: dict[str, Any],
    strategy: str,
    key: str,
) -> None:
    pid = create_project(app_client, accounts)["id"]
    before = row_counts(factory)
    body = {"strategy": strategy, "params": params}
    r = app_client.post(f"/api/v1/projects/{pid}/cycles", json=body, headers=accounts.h("engineer"))
    error = _error(r, key)
    assert (error["code"], error["detail"]["key"]) == ("invalid_params", key), error
    assert row_counts(factory) == before
    assert not app_client.app.state.task_sender.sent  # type: ignore[attr-defined]


def test_cycle_start_checks_the_project_params_against_the_cycle_strategy(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    project = create_project(
        app_client, accounts, strategy="bald", strategy_params={"mc_samples": 10}
    )
    url, h = f"/api/v1/projects/{project['id']}/cycles", accounts.h("engineer")
    before = row_counts(factory)
    _error(app_client.post(url, json={"strategy": "margin"}, headers=h), "mc_samples")
    assert row_counts(factory) == before
    r = app_client.post(url, json={"strategy": "noise_stability", "params": {"zeta": 1}}, headers=h)
    assert r.status_code == 202, r.text
    assert r.json()["params"] == {"zeta": 1.0}


def test_cleaning_cycle_params_are_its_folds(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    pid = create_project(app_client, accounts, kind="clean", crossfit_folds=0)["id"]
    url, h = f"/api/v1/projects/{pid}/cycles", accounts.h("engineer")
    before = row_counts(factory)
    for params, key, code in (
        ({"bogus": 1}, "bogus", "invalid_params"),
        ({"candidates": 5}, "candidates", "invalid_params"),
        ({"fold_seed": -1}, "fold_seed", "invalid_params"),
        ({"folds": 51}, "folds", "bad_folds"),
        ({"folds": 1}, "folds", "bad_folds"),
    ):
        error = _error(app_client.post(url, json={"params": params}, headers=h), key)
        assert error["code"] == code, error
    assert row_counts(factory) == before
    r = app_client.post(url, json={"params": {"folds": 0, "fold_seed": 3}}, headers=h)
    assert r.status_code == 202, r.text
    assert r.json()["params"] == {"folds": 0, "fold_seed": 3}
