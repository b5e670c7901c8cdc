"""JSON log lines carry the request id (HTTP) or the task id (Celery) and the ids that let
one follow a label from the browser's request to the cycle that trained on it."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from celery import signals
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from app.observability import context
from app.observability.celery_signals import REQUEST_ID_HEADER, connect_worker_signals
from app.observability.logs import JsonFormatter, TextFormatter, log_config
from tests.api.helpers import add_member, create_project, lease_next, open_batch, upload_png
from tests.conftest import BOTH_DB_MODES, Accounts


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """Everything logged during the test, formatted by the production JSON formatter."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def parsed(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]


def test_a_json_line_has_the_fixed_fields_context_and_extras(json_lines: io.StringIO) -> None:
    log = logging.getLogger("annoloop.test")
    with context.bound(request_id="r-1", cycle_id=7):
        log.info("hello %s", "world", extra={"item_id": 3})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    first, second = parsed(json_lines)[-2:]
    assert first["message"] == "hello world"
    assert (first["level"], first["logger"]) == ("INFO", "annoloop.test")
    assert (first["request_id"], first["task_id"]) == ("r-1", None)
    assert (first["cycle_id"], first["item_id"]) == (7, 3)
    assert first["time"].endswith("Z")
    assert second["request_id"] is None  # the context ended with the block
    assert "ValueError: boom" in second["exc_info"]


def test_text_format_shows_the_same_fields() -> None:
    record = logging.LogRecord("annoloop.x", logging.INFO, __file__, 1, "hi", (), None)
    with context.bound(task_id="t-9"):
        line = TextFormatter().format(record)
    assert "INFO" in line
    assert "annoloop.x: hi" in line
    assert "task_id=t-9" in line


def test_the_config_given_to_uvicorn_routes_its_loggers_through_ours() -> None:
    config = log_config(level="info", fmt="json")
    assert config["root"]["level"] == "INFO"
    assert config["formatters"]["annoloop"]["fmt"] == "json"
    assert config["loggers"]["uvicorn.error"] == {
        "handlers": [],
        "propagate": True,
        "level": "INFO",
    }


@BOTH_DB_MODES  # committed on Postgres: the hot path, which has no ORM events
def test_a_submitted_label_logs_request_id_annotation_id_and_idempotency_key(
    app_client: TestClient,
    accounts: Accounts,
    factory: sessionmaker[Session],
    json_lines: io.StringIO,
) -> None:
    pid = create_project(app_client, accounts)["id"]
    add_member(app_client, accounts, pid, "annotator")
    item = upload_png(app_client, accounts, pid)
    open_batch(factory, pid, [item["id"]])
    lease_next(app_client, accounts, pid, "annotator")
    r = app_client.post(
        f"/api/v1/items/{item['id']}/annotations",
        json={"class_index": 4, "idempotency_key": "tab-42-click-7"},
        headers={**accounts.h("annotator"), "X-Request-ID": "browser-req-1"},
    )
    assert r.status_code == 201, r.text
    assert r.headers["X-Request-ID"] == "browser-req-1"
    lines = [line for line in parsed(json_lines) if line["request_id"] == "browser-req-1"]
    stored = [line for line in lines if line["message"] == "label stored"]
    assert len(stored) == 1
    assert stored[0]["annotation_id"] == r.json()["id"]
    assert stored[0]["idempotency_key"] == "tab-42-click-7"
    assert (stored[0]["item_id"], stored[0]["project_id"]) == (item["id"], pid)
    access = [line for line in lines if line["logger"] == "annoloop.access"]
    assert access[-1]["route"] == "/api/v1/items/{item_id}/annotations"
    assert access[-1]["status"] == 201
    assert access[-1]["duration_ms"] >= 0


class FakeTask:
    """The two attributes of a Celery task the hooks read (signal senders must hash)."""

    def __init__(self, name: str, request: SimpleNamespace) -> None:
        self.name = name
        self.request = request


def test_a_task_carries_the_request_that_sent_it_and_logs_its_ids(
    json_lines: io.StringIO,
) -> None:
    connect_worker_signals()
    headers: dict[str, Any] = {}
    with context.bound(request_id="req-7"):
        signals.before_task_publish.send(sender="annoloop.cycles.run", headers=headers)
    assert headers[REQUEST_ID_HEADER] == "req-7"

    # What the worker's pool process sees: the header on the task request.
    task = FakeTask(
        "annoloop.cycles.advance",
        SimpleNamespace(annoloop_request_id="req-7", delivery_info={"redelivered": True}),
    )
    signals.task_prerun.send(sender=task, task_id="task-1", task=task, args=(5,), kwargs={})
    logging.getLogger("worker.pipeline.x").info("inside the task")
    signals.task_postrun.send(
        sender=task, task_id="task-1", task=task, args=(5,), kwargs={}, retval=None, state="SUCCESS"
    )
    logging.getLogger("worker.pipeline.x").info("after the task")
    lines = parsed(json_lines)
    inside = next(line for line in lines if line["message"] == "inside the task")
    assert (inside["task_id"], inside["request_id"], inside["project_id"]) == (
        "task-1",
        "req-7",
        5,
    )
    started = next(line for line in lines if line["message"] == "task started")
    assert started["redelivered"] is True
    finished = next(line for line in lines if line["message"] == "task finished")
    assert finished["task_state"] == "SUCCESS"
    assert finished["task_id"] == "task-1"
    after = next(line for line in lines if line["message"] == "after the task")
    assert after["task_id"] is None
    assert after["request_id"] is None
