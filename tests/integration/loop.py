"""Driving a project through the API the way people would: an engineer sets it up, simulated
annotators answer from known labels. Shared by the end-to-end tests."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import redis
from fastapi.testclient import TestClient

from app.auth.service import create_annotator, issue_token
from app.core.config import Settings
from app.core.db import make_session_factory, unit_of_work
from app.core.enums import Role
from tests.backends import REDIS_URL
from tests.integration.processes import env_for, wait_for


def settings_for(broker: str, db_url: str, data_dir: Path) -> Settings:
    """``broker``: ``redis`` (the shared test Redis, emptied first), a ``redis://`` URL (a
    private server, used as it is), or anything else for the embedded SQLite broker."""
    if broker == "redis" or broker.startswith("redis://"):
        url = REDIS_URL if broker == "redis" else broker
        if broker == "redis":
            redis.Redis.from_url(url).flushdb()
        return Settings(
            environment="test",
            data_dir=data_dir,
            database_url=db_url,
            broker_url=url,
            result_backend=url,
        )
    return Settings(environment="test", data_dir=data_dir, database_url=db_url)


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    """A worker process's environment; ``extra`` overrides (``OMP_NUM_THREADS`` included)."""
    return env_for(
        {
            "ANNOLOOP_DATA_DIR": str(settings.data_dir),
            "ANNOLOOP_DATABASE_URL": settings.database_url,
            "ANNOLOOP_BROKER_URL": settings.broker_url,
            "ANNOLOOP_RESULT_BACKEND": settings.result_backend,
            **extra,
        }
    )


def accounts(engine: Any, settings: Settings, annotators: int) -> tuple[str, list[tuple[int, str]]]:
    """An admin token and ``annotators`` (id, token) pairs."""
    with unit_of_work(make_session_factory(engine)) as db:
        admin = create_annotator(db, actor=None, name="admin", role=Role.admin)
        admin_token, _ = issue_token(db, admin, settings.secret_key)
        people = []
        for n in range(annotators):
            person = create_annotator(db, actor=None, name=f"oracle-{n}", role=Role.annotator)
            people.append((person.id, issue_token(db, person, settings.secret_key)[0]))
    return admin_token, people


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def upload_npz(
    client: TestClient, h: dict[str, str], pid: int, images: np.ndarray, split: Sequence[str]
) -> None:
    buf = io.BytesIO()
    np.savez(
        buf,
        images=images,
        split=np.asarray(split),
        external_ids=np.array([f"m{i}" for i in range(len(images))]),
    )
    r = client.post(
        f"/api/v1/projects/{pid}/items:bulk",
        files={"archive": ("data.npz", buf.getvalue(), "application/octet-stream")},
        headers=h,
    )
    assert r.status_code == 201, r.text


def noisy_cleaning_project(
    client: TestClient,
    h: dict[str, str],
    people: list[tuple[int, str]],
    images: np.ndarray,
    noisy: np.ndarray,
    *,
    classes: Sequence[str],
    input_shape: Sequence[int],
    batch_size: int,
    relabel_budget: int,
    finetune_every: int,
    strategy: str = "ce_minus_entropy",
    imported: int | None = None,
) -> int:
    """A cleaning project holding ``images`` as pool items ``m0``, ``m1``, … with the noisy
    labels of the first ``imported`` (default all) imported from one "crowd" annotator, and
    ``people`` as members; returns its id."""
    r = client.post(
        "/api/v1/projects",
        json={
            "name": "noisy",
            "kind": "clean",
            "classes": list(classes),
            "model_spec": {
                "name": "small_cnn",
                "input_shape": list(input_shape),
                "hparams": {"epochs": 4, "finetune_epochs": 1},
            },
            "batch_size": batch_size,
            "relabel_budget": relabel_budget,
            "finetune_every": finetune_every,
            "strategy": strategy,
        },
        headers=h,
    )
    assert r.status_code == 201, r.text
    pid = int(r.json()["id"])
    for person_id, _ in people:
        r = client.post(
            f"/api/v1/projects/{pid}/members", json={"annotator_id": person_id}, headers=h
        )
        assert r.status_code == 204, r.text
    upload_npz(client, h, pid, images, ["pool"] * len(images))
    rows = [
        {"external_id": f"m{i}", "annotator": "crowd", "class_index": int(label)}
        for i, label in enumerate(noisy[:imported])
    ]
    r = client.post(f"/api/v1/projects/{pid}/annotations:import", json=rows, headers=h)
    assert r.status_code == 200, r.text
    return pid


def wait_cycle(
    client: TestClient, h: dict[str, str], pid: int, cycle_id: int, log: Path, timeout: float = 240
) -> dict[str, Any]:
    def labeling() -> dict[str, Any] | None:
        c = client.get(f"/api/v1/projects/{pid}/cycles/{cycle_id}", headers=h).json()
        assert c["state"] != "failed", c["error"]
        return c if c["state"] in ("labeling", "completed") else None

    return dict(wait_for(labeling, timeout, f"cycle {cycle_id} to reach labeling", log))


def label_until(
    client: TestClient,
    pid: int,
    tokens: list[str],
    answer: Callable[[dict[str, Any]], int],
    *,
    stop: Callable[[dict[str, Any]], bool],
    timeout: float = 300,
) -> int:
    """Round-robin annotators through next → submit until every one of them is told to
    stop (``stop(next_response)``) or the time runs out. Returns the labels given."""
    given = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stopped = 0
        for token in tokens:
            nxt = client.get(f"/api/v1/projects/{pid}/next", headers=bearer(token)).json()
            if nxt["status"] != "leased":
                stopped += stop(nxt)
                continue
            r = client.post(
                f"/api/v1/items/{nxt['item']['id']}/annotations",
                json={"class_index": answer(nxt["item"])},
                headers=bearer(token),
            )
            assert r.status_code in (201, 409), r.text
            given += r.status_code == 201
        if stopped == len(tokens):
            return given
        time.sleep(0.2)
    raise AssertionError(f"annotators still had work after {timeout}s ({given} labels given)")


def wait_pretraining(
    client: TestClient, h: dict[str, str], pid: int, run_id: int, log: Path, timeout: float = 180
) -> dict[str, Any]:
    """The pretraining run once ``done``; failed or cancelled fails the test at once."""

    def done() -> dict[str, Any] | None:
        run = client.get(f"/api/v1/projects/{pid}/pretraining/{run_id}", headers=h).json()
        assert run["status"] not in ("failed", "cancelled"), run
        return dict(run) if run["status"] == "done" else None

    return dict(wait_for(done, timeout, f"pretraining run {run_id} to finish", log))
