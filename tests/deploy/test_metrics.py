"""``/metrics``: latency by route template, labels counter and DB gauges, queue depth, cycle
phases, the optional bearer token, and request ids on responses."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, update
from sqlalchemy.orm import Session, sessionmaker

from app.core.config import Settings
from app.core.db import utcnow
from app.core.enums import CycleState
from app.cycles.models import Cycle
from app.main import create_app
from app.observability.install import install_observability
from app.observability.metrics import record_label
from app.observability.settings import ObservabilitySettings
from tests.api.helpers import add_member, create_project, lease_next, open_batch, upload_png
from tests.conftest import BOTH_DB_MODES, Accounts
from tests.deploy.scrape import sample


def scrape(client: TestClient) -> str:
    r = client.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return r.text


def test_latency_is_labelled_by_route_template_not_raw_path(app_client: TestClient) -> None:
    before = sample(
        scrape(app_client),
        "annoloop_http_request_duration_seconds_count",
        method="GET",
        route="/api/v1/projects/{project_id}",
        status="401",
    )
    for pid in (123, 456):
        assert app_client.get(f"/api/v1/projects/{pid}").status_code == 401
    text = scrape(app_client)
    after = sample(
        text,
        "annoloop_http_request_duration_seconds_count",
        method="GET",
        route="/api/v1/projects/{project_id}",
        status="401",
    )
    assert after == (before or 0) + 2
    assert "/api/v1/projects/123" not in text
    assert sample(text, "annoloop_database_up") == 1


@BOTH_DB_MODES  # committed on Postgres: the hot path, which has no ORM events
def test_labels_counter_and_database_gauge_move_when_labels_arrive(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    pid = create_project(app_client, accounts)["id"]
    add_member(app_client, accounts, pid, "annotator")
    items = [upload_png(app_client, accounts, pid, seed=s, external_id=f"e{s}") for s in range(4)]
    project = str(pid)
    text = scrape(app_client)
    assert sample(text, "annoloop_labels_last_minute", project=project, source="import") == 0
    # Counters are per process and SQLite reuses ids across rolled-back tests: compare deltas.
    counted = {
        source: sample(text, "annoloop_labels_total", project=project, source=source) or 0
        for source in ("human", "import", "oracle")
    }

    # Import: the scrape-time DB gauge sees the rows, whichever process wrote them.
    rows = [{"external_id": "e0", "annotator": "crowd", "class_index": 3}]
    r = app_client.post(
        f"/api/v1/projects/{pid}/annotations:import", json=rows, headers=accounts.h("engineer")
    )
    assert r.status_code == 200, r.text
    text = scrape(app_client)
    assert sample(text, "annoloop_labels_last_minute", project=project, source="import") == 1
    assert sample(text, "annoloop_labels_total", project=project, source="import") == (
        counted["import"] + 1
    )

    # A browser submission (lease, then label) moves the counter and the gauge.
    open_batch(factory, pid, [items[1]["id"], items[2]["id"]])
    leased = lease_next(app_client, accounts, pid, "annotator")
    r = app_client.post(
        f"/api/v1/items/{leased['item']['id']}/annotations",
        json={"class_index": 1, "idempotency_key": "browser-key-1"},
        headers=accounts.h("annotator"),
    )
    assert r.status_code == 201, r.text
    text = scrape(app_client)
    assert sample(text, "annoloop_labels_total", project=project, source="human") == (
        counted["human"] + 1
    )
    assert sample(text, "annoloop_labels_last_minute", project=project, source="human") == 1
    assert sample(text, "annoloop_queue_open_entries", project=project) == 1

    # ``record_label`` is the public entry point for paths outside the ORM.
    record_label(pid, "oracle", annotation_id=None)
    text = scrape(app_client)
    assert sample(text, "annoloop_labels_total", project=project, source="oracle") == (
        counted["oracle"] + 1
    )


def test_a_rolled_back_label_is_not_counted(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    pid = create_project(app_client, accounts)["id"]
    item = upload_png(app_client, accounts, pid)
    before = sample(scrape(app_client), "annoloop_labels_total", project=str(pid)) or 0
    r = app_client.post(
        f"/api/v1/items/{item['id']}/annotations",
        json={"class_index": 99},  # out of range: refused, nothing stored
        headers=accounts.h("engineer"),
    )
    assert r.status_code == 422
    assert (sample(scrape(app_client), "annoloop_labels_total", project=str(pid)) or 0) == before


def test_cycle_gauges_come_from_the_cycle_rows(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    pid = create_project(app_client, accounts)["id"]
    item = upload_png(app_client, accounts, pid)
    first = open_batch(factory, pid, [item["id"]])
    second = open_batch(factory, pid, [])
    with factory() as db:
        db.execute(
            update(Cycle)
            .where(Cycle.id == first)
            .values(timings={"train_s": 4.0, "evaluate_s": 1.0, "score_s": 2.0})
        )
        db.execute(
            update(Cycle)
            .where(Cycle.id == second)
            .values(
                timings={"train_s": 6.0, "score_s": 4.0, "note": "x"},
                state=CycleState.scoring,
                started_at=utcnow() - timedelta(seconds=90),
            )
        )
        db.commit()
    text = scrape(app_client)
    project = str(pid)
    assert sample(text, "annoloop_cycles", project=project, state="labeling") == 1
    assert sample(text, "annoloop_cycles", project=project, state="failed") == 0
    # Only finished phases count (labeling/completed): the scoring cycle is still running.
    assert sample(text, "annoloop_cycle_phase_seconds", project=project, phase="train") == 4.0
    assert sample(text, "annoloop_cycle_phase_mean_seconds", project=project, phase="score") == 2
    running = sample(text, "annoloop_cycle_running_seconds", project=project)
    assert running is not None
    assert 89 <= running < 600
    assert sample(text, "annoloop_queue_open_entries", project=project) == 1


def test_metrics_token_guards_the_endpoint(
    settings: Settings, migrated_engine: Engine, factory: sessionmaker[Session]
) -> None:
    # The test's own session factory: a second connection would wait on its SQLite lock.
    application = create_app(settings, engine=migrated_engine, session_factory=factory)
    # A second install (with a token) only swaps the token: the route and middleware exist.
    install_observability(application, settings, ObservabilitySettings(metrics_token="s3cret"))
    with TestClient(application) as client:
        assert client.get("/metrics").status_code == 401
        wrong = client.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        ok = client.get("/metrics", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert "annoloop_http_request_duration_seconds" in ok.text


def test_request_id_is_kept_or_made_and_echoed(app_client: TestClient) -> None:
    mine = app_client.get("/healthz", headers={"X-Request-ID": "browser-123.abc"})
    assert mine.headers["X-Request-ID"] == "browser-123.abc"
    made = app_client.get("/healthz")
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["X-Request-ID"])
    hostile = app_client.get("/healthz", headers={"X-Request-ID": "a b\tc" + "x" * 300})
    assert re.fullmatch(r"[0-9a-f]{32}", hostile.headers["X-Request-ID"])
    # Errors carry it too, also those answered by inner middleware (413 body limit).
    big = app_client.post(
        "/api/v1/projects", content=b"x" * (2 * 1024**2), headers={"X-Request-ID": "big-1"}
    )
    assert big.status_code == 413
    assert big.headers["X-Request-ID"] == "big-1"


def test_metrics_is_not_swallowed_by_the_frontend_mount(app_client: TestClient) -> None:
    assert "annoloop_http_request_duration_seconds" in scrape(app_client)
    assert app_client.get("/").status_code == 200


@pytest.mark.parametrize("path", ["/healthz", "/metrics"])
def test_probe_paths_are_answered(app_client: TestClient, path: str) -> None:
    assert app_client.get(path).status_code in (200, 503)
