"""The loop through a real API + worker over HTTP, the way an engineer and annotators drive it
(as tests/integration/loop.py does): project, bulk upload, imported initial and test labels,
cycles with the strategy, oracle annotators labelling the queue through leases.

``local_server`` starts ``annoloop up`` (embedded SQLite + broker) in a scratch data folder.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from app.core.processes import free_port, started, wait_healthy
from worker.sim.oracle import make_oracle
from worker.sim.protocol import Arrays, Protocol, base_strategy, cycle_seed, setup
from worker.sim.record import CycleRecord, RunRecord

UPLOAD_CHUNK = 1000  # items per bulk upload, well under the server's upload limits
CYCLE_TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class Server:
    url: str
    token: str  # an admin's (or an engineer's who may create annotators)


@contextmanager
def local_server(data_dir: Path, log: Path | None = None) -> Iterator[Server]:
    """``annoloop up`` on a free port with its own data folder; stopped (SIGTERM) on exit."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANNOLOOP_")}
    # The oracle annotator labels as fast as the API answers: no human rate limit for it.
    env.update(
        ANNOLOOP_DATA_DIR=str(data_dir),
        ANNOLOOP_ENVIRONMENT="test",
        ANNOLOOP_RATE_LIMIT_LABELS_PER_MINUTE="0",
    )
    cli = [sys.executable, "-m", "app.cli"]
    data_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run([*cli, "migrate"], env=env, check=True, capture_output=True)
    token = subprocess.run(
        [*cli, "create-admin", "--name", "sim-admin"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    port = free_port()
    log = log or data_dir / "server.log"
    # One process group: the API and its worker stop together (SIGTERM, then SIGKILL).
    with started([*cli, "up", "--port", str(port)], env, log, stop_timeout=60) as proc:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, proc, log)
        yield Server(url, token)


def _ok(r: httpx.Response) -> Any:
    if r.status_code >= 400:
        raise RuntimeError(f"{r.request.method} {r.request.url} -> {r.status_code}: {r.text}")
    return r.json() if r.content else None


def run_api(
    server: Server, protocol: Protocol, strategy: str, seed: int, arrays: Arrays | None = None
) -> RunRecord:
    """One (strategy, seed) run as a fresh project on ``server``."""
    s = setup(protocol, seed, arrays)
    oracle = make_oracle(protocol.oracle, s.arrays.labels, s.arrays.counts, seed)
    admin = httpx.Client(
        base_url=f"{server.url}/api/v1",
        headers={"Authorization": f"Bearer {server.token}"},
        timeout=120,
    )
    stamp = f"{protocol.name}-{strategy}-{seed}-{time.time_ns()}"
    pid = _ok(
        admin.post(
            "/projects",
            json={
                "name": f"sim {stamp}",
                "classes": [str(c) for c in range(protocol.num_classes)],
                "model_spec": protocol.model,
                "strategy": base_strategy(strategy),
                "strategy_params": protocol.strategy_params(strategy),
                "batch_size": protocol.batch_size,
                "labels_per_item": 1,
                "seed": seed,
            },
        )
    )["id"]
    person = _ok(admin.post("/annotators", json={"name": f"oracle-{stamp}"}))
    _ok(admin.post(f"/projects/{pid}/members", json={"annotator_id": person["id"]}))
    annotator = httpx.Client(
        base_url=admin.base_url, headers={"Authorization": f"Bearer {person['token']}"}, timeout=60
    )

    # Pool first, then test: items get ids in this order, the order the worker reads them in.
    rows = np.concatenate([s.pool, s.test])
    splits = ["pool"] * len(s.pool) + ["test"] * len(s.test)
    for start in range(0, len(rows), UPLOAD_CHUNK):
        part = rows[start : start + UPLOAD_CHUNK]
        buf = io.BytesIO()
        np.savez(
            buf,
            images=s.arrays.images[part],
            split=np.asarray(splits[start : start + UPLOAD_CHUNK]),
            external_ids=np.array([f"r{r}" for r in part]),
        )
        files = {"archive": ("data.npz", buf.getvalue(), "application/octet-stream")}
        _ok(admin.post(f"/projects/{pid}/items:bulk", files=files))
    labels = [
        {"external_id": f"r{r}", "annotator": "initial", "class_index": oracle.answer(int(r))}
        for r in s.initial
    ] + [
        {"external_id": f"r{r}", "annotator": "truth", "class_index": int(s.arrays.labels[r])}
        for r in s.test
    ]
    _ok(admin.post(f"/projects/{pid}/annotations:import", json=labels))
    row_of = _rows_by_item_id(admin, pid)

    record = RunRecord(protocol.name, "api", strategy, seed)
    for k in range(protocol.cycles + 1):
        t0 = time.perf_counter()
        body = {
            "strategy": base_strategy(strategy),
            "params": protocol.strategy_params(strategy),
            "seed": cycle_seed(seed, k),
        }
        cycle = _wait_queued(admin, pid, _start_cycle(admin, pid, body))
        timings = {key: float(v) for key, v in cycle["timings"].items() if _is_number(v)}
        timings["cycle_wall_s"] = time.perf_counter() - t0
        queue = _ok(admin.get(f"/projects/{pid}/cycles/{cycle['id']}/queue"))
        selected = [row_of[e["item_id"]] for e in sorted(queue, key=lambda e: e["rank"])]
        metrics = cycle["metrics"]
        record.cycles.append(
            CycleRecord(k, int(metrics["labels"]), float(metrics["test"]["accuracy"]), selected)
        )
        record.cycles[-1].timings = timings
        if k < protocol.cycles:
            t0 = time.perf_counter()
            _label_queue(annotator, pid, row_of, oracle.answer)
            timings["label_wall_s"] = time.perf_counter() - t0
        else:  # the last queue stays unlabelled: close the cycle
            _ok(admin.post(f"/projects/{pid}/cycles/{cycle['id']}/cancel"))
    admin.close()
    annotator.close()
    return record


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _rows_by_item_id(client: httpx.Client, pid: int) -> dict[int, int]:
    out: dict[int, int] = {}
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        page = _ok(client.get(f"/projects/{pid}/items", params=params))
        out.update({it["id"]: int(it["external_id"][1:]) for it in page["items"]})
        cursor = page["next_cursor"]
        if not cursor:
            return out


def _start_cycle(client: httpx.Client, pid: int, body: dict[str, Any]) -> dict[str, Any]:
    """Start a cycle; the previous one completes in a worker task after its last label, so a
    409 ``cycle_running`` right after labelling means: ask again shortly."""
    deadline = time.monotonic() + 120
    while True:
        r = client.post(f"/projects/{pid}/cycles", json=body)
        running = r.status_code == 409 and "cycle_running" in r.text
        if not running or time.monotonic() > deadline:
            return dict(_ok(r))
        time.sleep(0.2)


def _wait_queued(client: httpx.Client, pid: int, cycle: dict[str, Any]) -> dict[str, Any]:
    deadline = time.monotonic() + CYCLE_TIMEOUT_S
    while time.monotonic() < deadline:
        cycle = _ok(client.get(f"/projects/{pid}/cycles/{cycle['id']}"))
        if cycle["state"] == "failed":
            raise RuntimeError(f"cycle {cycle['id']} failed: {cycle['error']}")
        if cycle["state"] in ("labeling", "completed"):
            return cycle
        time.sleep(0.2)
    raise RuntimeError(f"cycle {cycle['id']} did not queue within {CYCLE_TIMEOUT_S}s")


def _label_queue(
    client: httpx.Client, pid: int, row_of: dict[int, int], answer: Callable[[int], int]
) -> None:
    """next -> label until the queue is empty; one annotator is enough with one label each."""
    while True:
        nxt = _ok(client.get(f"/projects/{pid}/next"))
        if nxt["status"] != "leased":
            return
        item = nxt["item"]
        label = {
            "class_index": answer(row_of[item["id"]]),
            "idempotency_key": f"sim-item-{item['id']}",
        }
        _ok(client.post(f"/items/{item['id']}/annotations", json=label))
