"""Reliability with real processes: a worker killed mid-training, 20 annotators racing over
Postgres, and an API restarted while people label."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.annotations.models import Annotation
from app.core.db import make_engine, make_session_factory
from app.core.processes import wait_healthy
from app.demo.seed import load_demo_arrays
from app.main import create_app
from app.queue.models import Lease, QueueEntry
from tests.api.helpers import open_batch
from tests.backends import fresh_database
from tests.integration.loop import (
    accounts,
    bearer,
    settings_for,
    upload_npz,
    wait_cycle,
    worker_env,
)
from tests.integration.processes import free_port, process
from tests.integration.workers import VISIBILITY_S, kill_when, setup, wait_until_redeliverable

pytestmark = pytest.mark.slow


def _project(client: TestClient, h: dict[str, str], **extra: Any) -> int:
    body = {
        "name": f"p-{uuid.uuid4().hex[:6]}",
        "classes": [str(d) for d in range(10)],
        "model_spec": {"name": "small_cnn", "input_shape": [1, 28, 28], "hparams": {"epochs": 2}},
        **extra,
    }
    r = client.post("/api/v1/projects", json=body, headers=h)
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def test_a_worker_killed_while_training_is_redelivered_and_finishes_once(tmp_path: Path) -> None:
    images, labels = load_demo_arrays()
    n_pool, n_seed, batch = 400, 300, 20
    visibility = str(VISIBILITY_S)
    with setup("postgres", "redis", tmp_path, ANNOLOOP_BROKER_VISIBILITY_TIMEOUT=visibility) as w:
        client, h = w.client, w.h
        # Enough labelled items and epochs that training lasts several seconds.
        pid = _project(
            client,
            h,
            batch_size=batch,
            model_spec={
                "name": "small_cnn",
                "input_shape": [1, 28, 28],
                "hparams": {"epochs": 12, "batch_size": 16},
            },
        )
        upload_npz(client, h, pid, images[:n_pool], ["pool"] * n_pool)
        rows = [
            {"external_id": f"m{i}", "annotator": "seed", "class_index": int(labels[i])}
            for i in range(n_seed)
        ]
        client.post(f"/api/v1/projects/{pid}/annotations:import", json=rows, headers=h)
        cycle_id = client.post(f"/api/v1/projects/{pid}/cycles", json={}, headers=h).json()["id"]

        def state() -> str:
            c = client.get(f"/api/v1/projects/{pid}/cycles/{cycle_id}", headers=h).json()
            return str(c["state"])

        seen = kill_when(lambda: state() == "training", w.env, tmp_path / "worker-1.log")
        assert state() == "training"
        wait_until_redeliverable(seen)
        second_log = tmp_path / "worker-2.log"
        with process(["worker"], w.env, second_log):
            cycle = wait_cycle(client, h, pid, cycle_id, second_log, timeout=300)
        with w.factory()() as db:
            queued = db.scalars(
                select(QueueEntry.item_id).where(QueueEntry.cycle_id == cycle_id)
            ).all()
    assert cycle["state"] == "labeling"
    assert cycle["attempts"] == 2  # the killed run, then the redelivered one
    assert len(queued) == batch
    assert len(set(queued)) == batch


def _overlaps(leases: list[Lease]) -> int:
    """The most leases of one queue entry that were open at the same moment."""
    events = []
    for lease in leases:
        events.append((lease.created_at, 1))
        events.append((lease.released_at or lease.expires_at, -1))
    top = current = 0
    for _, delta in sorted(events, key=lambda e: (e[0], e[1])):
        current += delta
        top = max(top, current)
    return top


def test_twenty_annotators_label_a_batch_three_times_without_loss_or_double_leases(
    tmp_path: Path,
) -> None:
    n_items, wanted, clients = 300, 3, 20
    images, _ = load_demo_arrays()
    with fresh_database("postgres", tmp_path) as db_url:
        settings = settings_for("redis", db_url, tmp_path / "data")
        engine = make_engine(db_url)
        factory = make_session_factory(engine)
        admin, people = accounts(engine, settings, annotators=clients)
        h = bearer(admin)
        with TestClient(create_app(settings, engine=engine)) as client:
            # Every item must take exactly ``wanted`` labels (the counts below check it), so
            # an item is not settled early when its first labels agree.
            pid = _project(client, h, labels_per_item=wanted, stop_when_decided=False)
            for person_id, _ in people:
                client.post(
                    f"/api/v1/projects/{pid}/members", json={"annotator_id": person_id}, headers=h
                )
            upload_npz(client, h, pid, images[:n_items], ["pool"] * n_items)
            item_ids = [
                i["id"]
                for i in client.get(
                    f"/api/v1/projects/{pid}/items", params={"limit": 500}, headers=h
                ).json()["items"]
            ]
        open_batch(factory, pid, item_ids, labels_wanted=wanted)

        port = free_port()
        base = f"http://127.0.0.1:{port}/api/v1"
        log = tmp_path / "api.log"
        acknowledged: list[tuple[int, int]] = []
        errors: list[str] = []
        lock = threading.Lock()

        def annotate(person_id: int, token: str) -> None:
            with httpx.Client(headers=bearer(token), timeout=30) as http:
                while True:
                    nxt = http.get(f"{base}/projects/{pid}/next").json()
                    if nxt["status"] != "leased":
                        return
                    item = nxt["item"]["id"]
                    r = http.post(
                        f"{base}/items/{item}/annotations",
                        json={"class_index": item % 10, "idempotency_key": uuid.uuid4().hex},
                    )
                    with lock:
                        if r.status_code == 201:
                            acknowledged.append((item, person_id))
                        else:
                            errors.append(f"{r.status_code} {r.text}")

        env = worker_env(settings)
        with process(["api", "--port", str(port), "--workers", "2"], env, log) as api:
            wait_healthy(f"http://127.0.0.1:{port}", api, log, 60)
            threads = [threading.Thread(target=annotate, args=p) for p in people]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=300)
        with factory() as db:
            votes = db.execute(
                select(Annotation.item_id, Annotation.annotator_id).where(
                    Annotation.project_id == pid, Annotation.retracted_at.is_(None)
                )
            ).all()
            entries = db.scalars(select(QueueEntry).where(QueueEntry.project_id == pid)).all()
            leases_by_entry: dict[int, list[Lease]] = defaultdict(list)
            for lease in db.scalars(select(Lease).where(Lease.project_id == pid)):
                leases_by_entry[lease.queue_entry_id].append(lease)
            spent = db.scalar(select(func.count(Annotation.id)).where(Annotation.project_id == pid))
        engine.dispose()

    assert errors == []
    assert sorted(acknowledged) == sorted((v.item_id, v.annotator_id) for v in votes)  # no loss
    per_item = Counter(v.item_id for v in votes)
    assert set(per_item.values()) == {wanted}
    assert len(per_item) == n_items
    assert len(set(votes)) == len(votes)  # three different annotators per item
    assert spent == n_items * wanted
    assert all(e.state.value == "done" and e.labels_received == wanted for e in entries)
    assert all(e.leases_open == 0 for e in entries)
    assert max(_overlaps(ls) for ls in leases_by_entry.values()) <= wanted


def test_an_api_restart_keeps_labels_and_leases(tmp_path: Path) -> None:
    images, _ = load_demo_arrays()
    with fresh_database("sqlite", tmp_path) as db_url:
        settings = settings_for("embedded", db_url, tmp_path / "data")
        engine = make_engine(db_url)
        factory = make_session_factory(engine)
        admin, people = accounts(engine, settings, annotators=2)
        h = bearer(admin)
        with TestClient(create_app(settings, engine=engine)) as client:
            pid = _project(client, h)
            for person_id, _ in people:
                client.post(
                    f"/api/v1/projects/{pid}/members", json={"annotator_id": person_id}, headers=h
                )
            upload_npz(client, h, pid, images[:10], ["pool"] * 10)
            item_ids = [
                i["id"]
                for i in client.get(f"/api/v1/projects/{pid}/items", headers=h).json()["items"]
            ]
        open_batch(factory, pid, item_ids)
        engine.dispose()

        port = free_port()
        base = f"http://127.0.0.1:{port}/api/v1"
        env = worker_env(settings)
        (_, alice), (_, bob) = people

        def up(api: subprocess.Popen[bytes], log: Path) -> None:
            wait_healthy(f"http://127.0.0.1:{port}", api, log, 60)

        first_log = tmp_path / "api-1.log"
        with process(["api", "--port", str(port)], env, first_log) as api:
            up(api, first_log)
            done = []
            for _ in range(3):
                nxt = httpx.get(f"{base}/projects/{pid}/next", headers=bearer(alice)).json()
                r = httpx.post(
                    f"{base}/items/{nxt['item']['id']}/annotations",
                    json={"class_index": 1},
                    headers=bearer(alice),
                )
                assert r.status_code == 201
                done.append(nxt["item"]["id"])
            held = httpx.get(f"{base}/projects/{pid}/next", headers=bearer(bob)).json()
            os.killpg(api.pid, signal.SIGKILL)
            api.wait()
        second_log = tmp_path / "api-2.log"
        with process(["api", "--port", str(port)], env, second_log) as api:
            up(api, second_log)
            again = httpx.get(f"{base}/projects/{pid}/next", headers=bearer(bob)).json()
            assert again["lease"]["id"] == held["lease"]["id"]  # the lease survived
            r = httpx.post(
                f"{base}/items/{held['item']['id']}/annotations",
                json={"class_index": 2},
                headers=bearer(bob),
            )
            assert r.status_code == 201
            labels = httpx.get(f"{base}/projects/{pid}/annotations", headers=bearer(admin)).json()
    got = sorted((a["item_id"], a["class_index"]) for a in labels["items"])
    assert got == sorted([(i, 1) for i in done] + [(held["item"]["id"], 2)])


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False
