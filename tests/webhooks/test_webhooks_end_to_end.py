"""Webhooks through the whole system: the real API and worker processes run a cycle and
annotators label its batch while the receiver is down; it then comes up answering errors,
then recovers, and gets every event, signed, once accepted. SQLite with the embedded broker,
and Postgres with Redis (where the label goes through the hot path's database function)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from annoloop.client import Client
from annoloop.client.webhooks import verify
from tests.backends import BACKENDS
from tests.client.conftest import running_annoloop
from tests.integration.processes import free_port
from tests.webhooks.receiver import Receiver

pytestmark = pytest.mark.slow
SETUPS = [s for s in [("sqlite", "embedded"), ("postgres", "redis")] if s[0] in BACKENDS]
SECRET = "end-to-end-secret-0123456789"
FAST = {
    "ANNOLOOP_WEBHOOK_INTERVAL_S": "0.3",
    "ANNOLOOP_WEBHOOK_BACKOFF_S": "0.5",
    "ANNOLOOP_WEBHOOK_BACKOFF_MAX_S": "2",
    "ANNOLOOP_WEBHOOK_MAX_ATTEMPTS": "100",
}


@pytest.mark.parametrize(("backend", "broker"), SETUPS, ids=[s[0] for s in SETUPS])
def test_no_event_is_lost_while_the_receiver_is_down(
    tmp_path: Path, backend: str, broker: str
) -> None:
    receiver = Receiver(free_port())  # reserved, nobody listening yet
    with running_annoloop(tmp_path, backend, broker, **FAST) as live:
        (person, annotator) = live.annotators[0]
        with Client(live.url, live.engineer, progress=False) as c:
            spec = {
                "name": "hooked",
                "classes": ["a", "b", "c"],
                "model_spec": {"name": "mlp", "input_shape": [4], "hparams": {"epochs": 2}},
                "strategy": "random",
                "batch_size": 2,
                "label_budget": 2,
            }
            pid = c.create_project(spec)["id"]
            c.add_member(pid, person)
            features = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
            c.upload_arrays(pid, features=features, external_ids=[f"f{i}" for i in range(8)])
            seed = [
                {"external_id": f"f{i}", "annotator": "seed", "class_index": i} for i in range(3)
            ]
            c.import_labels(pid, seed)
            hook = c.create_webhook(
                pid,
                receiver.url,
                ["cycle.state_changed", "batch.labelled", "budget.spent"],
                secret=SECRET,
            )
            cycle = c.wait_for(c.start_cycle(pid), "labeling", timeout=180)
            with Client(live.url, annotator, progress=False) as a:
                for _ in range(2):
                    nxt = a.next_item(pid)
                    assert nxt["item"] is not None, nxt
                    a.submit_label(nxt["item"]["id"], 1)
            c.wait_for(cycle, "completed", timeout=120)
            log = c.webhook_deliveries(pid, hook["id"])
            assert log, "no delivery written"
            assert all(d["state"] == "pending" for d in log)  # the receiver is down
            assert any("ConnectError" in (d["last_error"] or "") for d in log)

            receiver.statuses = [503, 500]  # up, but failing twice before it recovers
            receiver.start()
            try:
                deadline = time.monotonic() + 90
                while time.monotonic() < deadline:
                    log = c.webhook_deliveries(pid, hook["id"])
                    if all(d["state"] == "delivered" for d in log):
                        break
                    time.sleep(0.5)
            finally:
                receiver.stop()
    assert all(d["state"] == "delivered" for d in log), log
    events = sorted(
        (d["event"], str(d["payload"].get("from")), str(d["payload"].get("to"))) for d in log
    )
    assert events == sorted(
        (e, str(f), str(t))
        for e, f, t in [
            ("cycle.state_changed", None, "created"),
            ("cycle.state_changed", "created", "training"),
            ("cycle.state_changed", "training", "scoring"),
            ("cycle.state_changed", "scoring", "labeling"),
            ("cycle.state_changed", "labeling", "completed"),
            ("batch.labelled", None, None),
            ("budget.spent", None, None),
        ]
    )
    budget = next(d for d in log if d["event"] == "budget.spent")
    assert budget["payload"] == {
        "project_id": pid,
        "kind": "acquire",
        "labels_spent": 2,
        "budget": 2,
    }
    accepted = receiver.accepted()
    assert sorted(int(r.headers["X-Annoloop-Delivery"]) for r in accepted) == sorted(
        d["id"] for d in log
    )
    for r in accepted:
        body = verify(SECRET, r.body, r.headers)
        assert body["id"] == int(r.headers["X-Annoloop-Delivery"])
    assert [r.status for r in receiver.got[:2]] == [503, 500]
    assert max(d["attempts"] for d in log) >= 2
