"""Every route of the OpenAPI schema, called by every role: the status each one gets.

The table below is the authorization policy written out. A route added without a row makes
``test_every_route_has_a_row`` fail, so nobody ships an endpoint whose access was never
decided. Each request runs inside a savepoint that is rolled back, so one role's DELETE does
not change what the next role sees. Bodies are minimal valid ones: a status here is about who
may call, not about validation. Where the caller is allowed but the state refuses (retrying
a cycle that has not failed, submitting without a lease), the table says 409 or 404 — still
proof that authorization passed.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, select
from sqlalchemy.orm import Session, sessionmaker

from app.auth.models import ApiToken
from app.webhooks.models import WebhookDelivery
from tests.api.helpers import (
    SMALL_CNN,
    add_member,
    create_project,
    lease_next,
    open_batch,
    png_bytes,
    upload_png,
)
from tests.conftest import Accounts

ROLES = ("admin", "engineer", "annotator", "outsider", "anon")


class Row(NamedTuple):
    """Expected status per role; ``anon`` sends no Authorization header."""

    admin: int
    engineer: int
    annotator: int
    outsider: int
    anon: int


PUBLIC = Row(200, 200, 200, 200, 200)
ANY_USER = Row(200, 200, 200, 200, 401)
MEMBER_READ = Row(200, 200, 200, 404, 401)  # outsiders must not learn the project exists
ENGINEER_READ = Row(200, 200, 403, 403, 401)


def _npz() -> bytes:
    buf = io.BytesIO()
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)  # distinct: no dedupe
    np.savez(buf, images=images)
    return buf.getvalue()


def _features_npz() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, external_ids=np.array(["nobody"]), features_emb=np.ones((1, 4), np.float32))
    return buf.getvalue()


@dataclass
class World:
    project: int
    item: int
    cycle: int
    lease: int
    annotator: int
    outsider: int
    annotator_token: int
    webhook: int
    delivery: int


@dataclass
class Call:
    expect: Row
    path_params: Callable[[World], dict[str, int]] = lambda w: {}
    kwargs: Callable[[World], dict[str, Any]] = lambda w: {}


def _p(w: World) -> dict[str, int]:
    return {"project_id": w.project}


def _pc(w: World) -> dict[str, int]:
    return {"project_id": w.project, "cycle_id": w.cycle}


def _w(w: World) -> dict[str, int]:
    return {"project_id": w.project, "webhook_id": w.webhook}


def _no_run(w: World) -> dict[str, int]:
    return {"project_id": w.project, "run_id": 999_999}


def _i(w: World) -> dict[str, int]:
    return {"item_id": w.item}


V1 = "/api/v1"
TABLE: dict[tuple[str, str], Call] = {
    ("GET", "/healthz"): Call(PUBLIC),
    ("GET", f"{V1}/me"): Call(ANY_USER),
    ("GET", f"{V1}/annotators"): Call(ENGINEER_READ),
    ("POST", f"{V1}/annotators"): Call(
        Row(201, 201, 403, 403, 401), kwargs=lambda w: {"json": {"name": "newcomer"}}
    ),
    ("POST", f"{V1}/annotators/{{annotator_id}}/tokens"): Call(
        Row(201, 403, 403, 403, 401),  # admins only
        lambda w: {"annotator_id": w.annotator},
        lambda w: {"json": {}},
    ),
    # The annotator's own token: its owner and admins may revoke it, nobody else.
    ("DELETE", f"{V1}/tokens/{{token_id}}"): Call(
        Row(204, 403, 204, 403, 401), lambda w: {"token_id": w.annotator_token}
    ),
    ("GET", f"{V1}/projects"): Call(ANY_USER),
    ("GET", f"{V1}/strategies"): Call(ANY_USER),
    ("POST", f"{V1}/projects"): Call(
        Row(201, 201, 403, 403, 401),
        kwargs=lambda w: {
            "json": {"name": "other", "classes": ["a", "b"], "model_spec": SMALL_CNN}
        },
    ),
    ("GET", f"{V1}/projects/{{project_id}}"): Call(MEMBER_READ, _p),
    ("PATCH", f"{V1}/projects/{{project_id}}"): Call(
        ENGINEER_READ, _p, lambda w: {"json": {"auto_advance": False}}
    ),
    ("GET", f"{V1}/projects/{{project_id}}/members"): Call(ENGINEER_READ, _p),
    ("POST", f"{V1}/projects/{{project_id}}/members"): Call(
        Row(204, 204, 403, 403, 401), _p, lambda w: {"json": {"annotator_id": w.outsider}}
    ),
    ("DELETE", f"{V1}/projects/{{project_id}}/members/{{annotator_id}}"): Call(
        Row(204, 204, 403, 403, 401),
        lambda w: {"project_id": w.project, "annotator_id": w.annotator},
    ),
    ("POST", f"{V1}/projects/{{project_id}}/items"): Call(
        Row(201, 201, 403, 403, 401),
        _p,
        lambda w: {"files": {"file": ("x.png", png_bytes(7), "image/png")}},
    ),
    ("GET", f"{V1}/projects/{{project_id}}/items"): Call(ENGINEER_READ, _p),
    ("POST", f"{V1}/projects/{{project_id}}/items:bulk"): Call(
        Row(201, 201, 403, 403, 401),
        _p,
        lambda w: {"files": {"archive": ("d.npz", _npz(), "application/octet-stream")}},
    ),
    # Allowed callers get past authorization to the content check: no item "nobody" (422).
    ("POST", f"{V1}/projects/{{project_id}}/features:bulk"): Call(
        Row(422, 422, 403, 403, 401),
        _p,
        lambda w: {"files": {"archive": ("f.npz", _features_npz(), "application/octet-stream")}},
    ),
    ("GET", f"{V1}/projects/{{project_id}}/features"): Call(ENGINEER_READ, _p),
    ("GET", f"{V1}/items/{{item_id}}"): Call(MEMBER_READ, _i),
    ("GET", f"{V1}/items/{{item_id}}/payload"): Call(MEMBER_READ, _i),
    # Only the annotator holds the item's lease; the others are allowed but not leased (409).
    ("POST", f"{V1}/items/{{item_id}}/annotations"): Call(
        Row(409, 409, 201, 404, 401), _i, lambda w: {"json": {"class_index": 0}}
    ),
    ("GET", f"{V1}/projects/{{project_id}}/annotations"): Call(ENGINEER_READ, _p),
    ("POST", f"{V1}/projects/{{project_id}}/annotations:import"): Call(
        ENGINEER_READ,
        _p,
        lambda w: {"json": [{"external_id": "x0", "annotator": "crowd-1", "class_index": 1}]},
    ),
    ("POST", f"{V1}/projects/{{project_id}}/cycles"): Call(
        Row(202, 202, 403, 403, 401), _p, lambda w: {"json": {}}
    ),
    ("GET", f"{V1}/projects/{{project_id}}/cycles"): Call(MEMBER_READ, _p),
    ("GET", f"{V1}/projects/{{project_id}}/cycles/{{cycle_id}}"): Call(MEMBER_READ, _pc),
    ("POST", f"{V1}/projects/{{project_id}}/cycles/{{cycle_id}}/retry"): Call(
        Row(409, 409, 403, 403, 401),
        _pc,  # only failed cycles are retried
    ),
    ("POST", f"{V1}/projects/{{project_id}}/cycles/{{cycle_id}}/cancel"): Call(ENGINEER_READ, _pc),
    ("GET", f"{V1}/projects/{{project_id}}/cycles/{{cycle_id}}/queue"): Call(ENGINEER_READ, _pc),
    ("GET", f"{V1}/projects/{{project_id}}/cycles/{{cycle_id}}/scores"): Call(
        Row(404, 404, 403, 403, 401),
        _pc,  # allowed, but the test cycle was never scored
    ),
    ("GET", f"{V1}/projects/{{project_id}}/next"): Call(MEMBER_READ, _p),
    # A lease is its holder's: to anyone else it does not exist.
    ("POST", f"{V1}/leases/{{lease_id}}/skip"): Call(
        Row(404, 404, 204, 404, 401), lambda w: {"lease_id": w.lease}
    ),
    ("POST", f"{V1}/projects/{{project_id}}/annotations:undo"): Call(
        Row(409, 409, 409, 404, 401),
        _p,  # allowed; nobody has a label to undo yet
    ),
    ("GET", f"{V1}/projects/{{project_id}}/progress"): Call(MEMBER_READ, _p),
    ("GET", f"{V1}/projects/{{project_id}}/export"): Call(ENGINEER_READ, _p),
    # Gold is truth for evaluation and honeypots: annotators must not read or write it.
    ("POST", f"{V1}/projects/{{project_id}}/gold:import"): Call(
        ENGINEER_READ, _p, lambda w: {"json": [{"external_id": "x0", "class_index": 1}]}
    ),
    ("GET", f"{V1}/projects/{{project_id}}/gold"): Call(ENGINEER_READ, _p),
    # Pretraining holds a train worker for a long time: engineers only. Allowed callers get
    # past authorization to the pool check (one item; SimCLR needs two: 422) or to the lookup
    # of a run that does not exist (404).
    ("POST", f"{V1}/projects/{{project_id}}/pretraining"): Call(
        Row(422, 422, 403, 403, 401), _p, lambda w: {"json": {}}
    ),
    ("GET", f"{V1}/projects/{{project_id}}/pretraining"): Call(ENGINEER_READ, _p),
    ("GET", f"{V1}/projects/{{project_id}}/pretraining/{{run_id}}"): Call(
        Row(404, 404, 403, 403, 401), _no_run
    ),
    ("POST", f"{V1}/projects/{{project_id}}/pretraining/{{run_id}}/cancel"): Call(
        Row(404, 404, 403, 403, 401), _no_run
    ),
    # Webhooks call out of the server with the project's events: engineers only.
    ("POST", f"{V1}/projects/{{project_id}}/webhooks"): Call(
        Row(201, 201, 403, 403, 401),
        _p,
        lambda w: {"json": {"url": "https://example.org/", "events": ["budget.spent"]}},
    ),
    ("GET", f"{V1}/projects/{{project_id}}/webhooks"): Call(ENGINEER_READ, _p),
    ("DELETE", f"{V1}/projects/{{project_id}}/webhooks/{{webhook_id}}"): Call(
        Row(204, 204, 403, 403, 401), _w
    ),
    ("GET", f"{V1}/projects/{{project_id}}/webhooks/{{webhook_id}}/deliveries"): Call(
        ENGINEER_READ, _w
    ),
    (
        "POST",
        f"{V1}/projects/{{project_id}}/webhooks/{{webhook_id}}/deliveries/{{delivery_id}}/retry",
    ): Call(
        Row(409, 409, 403, 403, 401),  # allowed; the delivery has not failed
        lambda w: {"project_id": w.project, "webhook_id": w.webhook, "delivery_id": w.delivery},
    ),
}


def _operations(client: TestClient) -> set[tuple[str, str]]:
    schema = client.get("/openapi.json").json()
    return {
        (method.upper(), path)
        for path, item in schema["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    }


def _world(client: TestClient, accounts: Accounts, factory: sessionmaker[Session]) -> World:
    pid = create_project(client, accounts)["id"]
    add_member(client, accounts, pid, "annotator")
    item = upload_png(client, accounts, pid, seed=1, external_id="x0")["id"]
    hook = client.post(
        f"{V1}/projects/{pid}/webhooks",
        json={"url": "https://example.org/", "events": ["cycle.state_changed"]},
        headers=accounts.h("engineer"),
    ).json()["id"]
    cycle = open_batch(factory, pid, [item], labels_wanted=3)  # writes a delivery
    lease = lease_next(client, accounts, pid, "annotator")["lease"]["id"]
    with factory() as db:
        token = db.scalar(
            select(ApiToken.id).where(ApiToken.annotator_id == accounts.ids["annotator"])
        )
        delivery = db.scalar(select(WebhookDelivery.id).where(WebhookDelivery.webhook_id == hook))
    assert token is not None
    assert delivery is not None
    return World(
        project=pid,
        item=item,
        cycle=cycle,
        lease=lease,
        annotator=accounts.ids["annotator"],
        outsider=accounts.ids["outsider"],
        annotator_token=token,
        webhook=hook,
        delivery=delivery,
    )


def test_every_route_has_a_row(app_client: TestClient) -> None:
    operations = _operations(app_client)
    assert sorted(operations - TABLE.keys()) == [], "routes without a row in TABLE"
    assert sorted(TABLE.keys() - operations) == [], "rows for routes that no longer exist"


@pytest.mark.parametrize("role", ROLES)
def test_role_gets_the_tabled_status(
    role: str,
    app_client: TestClient,
    accounts: Accounts,
    factory: sessionmaker[Session],
    connection: Connection,
) -> None:
    world = _world(app_client, accounts, factory)
    headers = {} if role == "anon" else accounts.h(role)
    wrong: list[str] = []
    for (method, template), call in sorted(TABLE.items()):
        path = template.format(**call.path_params(world))
        savepoint = connection.begin_nested()
        try:
            r = app_client.request(method, path, headers=headers, **call.kwargs(world))
        finally:
            savepoint.rollback()
        expected = getattr(call.expect, role)
        if r.status_code != expected:
            wrong.append(f"{method} {template}: {r.status_code} != {expected} {r.text[:200]}")
    assert wrong == [], f"{role}:\n" + "\n".join(wrong)
