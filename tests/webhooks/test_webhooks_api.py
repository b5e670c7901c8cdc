"""Subscriptions over the API (both databases): what is stored, what is refused, the
delivery log; and the URL rules production applies."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from app.core.db import utcnow
from app.webhooks.models import WebhookDelivery
from app.webhooks.urls import BadWebhookUrl, check_url
from tests.api.helpers import create_project
from tests.conftest import Accounts, row_counts

EVENTS = ["cycle.state_changed", "batch.labelled", "budget.spent"]


def test_subscribe_list_remove(app_client: TestClient, accounts: Accounts) -> None:
    pid = create_project(app_client, accounts)["id"]
    h = accounts.h("engineer")
    r = app_client.post(
        f"/api/v1/projects/{pid}/webhooks",
        json={"url": "https://example.org/hook", "events": [*EVENTS, "batch.labelled"]},
        headers=h,
    )
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["events"] == EVENTS
    assert len(made["secret"]) >= 32
    chosen = app_client.post(
        f"/api/v1/projects/{pid}/webhooks",
        json={"url": "http://10.1.2.3:8080/x", "events": ["budget.spent"], "secret": "k" * 16},
        headers=h,
    )
    assert chosen.status_code == 201
    assert chosen.json()["secret"] == "k" * 16
    listed = app_client.get(f"/api/v1/projects/{pid}/webhooks", headers=h).json()
    assert [w["id"] for w in listed] == [made["id"], chosen.json()["id"]]
    assert all("secret" not in w for w in listed)
    gone = app_client.delete(f"/api/v1/projects/{pid}/webhooks/{made['id']}", headers=h)
    assert gone.status_code == 204
    after = app_client.get(f"/api/v1/projects/{pid}/webhooks", headers=h).json()
    assert [w["active"] for w in after] == [False, True]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"url": "ftp://example.org/x", "events": ["budget.spent"]}, "webhook_url_invalid"),
        ({"url": "https://u:p@example.org/x", "events": ["budget.spent"]}, "webhook_url_invalid"),
        ({"url": "not a url", "events": ["budget.spent"]}, "webhook_url_invalid"),
        ({"url": "https://example.org/", "events": []}, None),
        ({"url": "https://example.org/", "events": ["item.deleted"]}, None),
        ({"url": "https://example.org/", "events": ["budget.spent"], "secret": "short"}, None),
    ],
)
def test_bad_subscriptions_are_refused_and_store_nothing(
    app_client: TestClient,
    accounts: Accounts,
    factory: sessionmaker[Session],
    body: dict[str, object],
    code: str | None,
) -> None:
    pid = create_project(app_client, accounts)["id"]
    before = row_counts(factory)
    r = app_client.post(
        f"/api/v1/projects/{pid}/webhooks", json=body, headers=accounts.h("engineer")
    )
    assert r.status_code == 422, r.text
    if code:
        assert r.json()["error"]["code"] == code
    assert row_counts(factory) == before


def test_annotators_and_outsiders_cannot_subscribe(
    app_client: TestClient, accounts: Accounts
) -> None:
    pid = create_project(app_client, accounts)["id"]
    body = {"url": "https://example.org/", "events": ["budget.spent"]}
    for who in ("annotator", "outsider"):
        r = app_client.post(f"/api/v1/projects/{pid}/webhooks", json=body, headers=accounts.h(who))
        assert r.status_code in (403, 404), r.text


def test_delivery_log_and_retry_of_a_failed_delivery(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    pid = create_project(app_client, accounts, label_budget=10)["id"]
    h = accounts.h("engineer")
    hook = app_client.post(
        f"/api/v1/projects/{pid}/webhooks",
        json={"url": "https://example.org/", "events": ["cycle.state_changed"]},
        headers=h,
    ).json()
    started = app_client.post(f"/api/v1/projects/{pid}/cycles", json={}, headers=h)
    assert started.status_code == 202
    log = app_client.get(f"/api/v1/projects/{pid}/webhooks/{hook['id']}/deliveries", headers=h)
    (entry,) = log.json()
    assert entry["event"] == "cycle.state_changed"
    assert entry["payload"]["to"] == "created"
    assert entry["payload"]["from"] is None
    assert (entry["state"], entry["attempts"]) == ("pending", 0)
    url = f"/api/v1/projects/{pid}/webhooks/{hook['id']}/deliveries/{entry['id']}/retry"
    assert app_client.post(url, headers=h).json()["error"]["code"] == "not_failed"
    with factory() as db:
        db.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == entry["id"])
            .values(state="failed", attempts=12, next_attempt_at=utcnow() + timedelta(hours=1))
        )
        db.commit()
    again = app_client.post(url, headers=h)
    assert again.status_code == 200, again.text
    assert (again.json()["state"], again.json()["attempts"]) == ("pending", 0)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://10.0.0.7/x",
        "http://192.168.1.1/x",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:8000/",
        "http://localhost:9000/",
        "http://0.0.0.0/",
    ],
)
def test_production_refuses_private_addresses_unless_allowed(url: str) -> None:
    with pytest.raises(BadWebhookUrl) as refused:
        check_url(url, allow_private=False)
    assert refused.value.code == "webhook_url_private"
    check_url(url, allow_private=True)


def test_public_addresses_pass() -> None:
    check_url("https://93.184.215.14/hook", allow_private=False)
    check_url("http://[2606:4700:4700::1111]/", allow_private=False)
