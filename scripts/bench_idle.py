"""Annotator idle time during active label cleaning, driven only through the REST API.

    .venv/bin/python scripts/bench_idle.py [--code DIR] [--seed 0] [--think 0.2] [--out F.json]

Starts ``annoloop up`` (embedded SQLite + broker + worker) from the checkout ``--code`` (default:
the repository this script lives in) in a scratch data folder, creates a ``clean`` project on the
music crowd data (``music.npz``: 700 songs, 10 genres, real Mechanical Turk answers; found at
``<this repo>/../shared/data`` or ``$ANNOLOOP_SHARED_DATA``), imports one real answer per song as
the noisy start (annotator ``crowd``), starts the first cycle, and lets ``--annotators`` threads
label through ``next`` -> submit: each relabel is another real answer of the song, drawn with
replacement (seeded per song and draw, so the answers do not depend on who labels what). A
``queue_empty`` answer is counted, its ``reason`` recorded where the server gives one, and asked
again after ``--poll`` seconds. Annotators stop on ``budget_spent``, ``pool_spent``, after
``--stall`` seconds without any label, or at the ``--cap`` wall clock.

Only routes that exist both before and after the cleaning-queue rework (a9370b4) are used, so
``--code`` may point at a worktree of the old code to compare.

Prints one line per annotator: labels, queue_empty answers, start_s (waiting for the first
item while the first cycle trains), idle_s (after the first item: from a queue_empty to the next
lease), tail_s (idle when the run ended), and the idle seconds split by the ``reason`` of each
queue_empty (``-`` where the server gives none; the JSON also splits them by ``cycle_state``);
then a summary: cycles and their states, labels, wall time, and the accuracy of the final strict
majorities against the true genre (ties wrong). ``--out`` writes all of it, with the cycles'
timings, as JSON.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from app.core.processes import free_port, started, wait_healthy

REPO = Path(__file__).resolve().parent.parent


@dataclass
class AnnotatorStats:
    name: str
    labels: int = 0
    empty: int = 0
    startup_s: float = 0.0  # start -> first lease (the first cycle's training)
    idle_s: float = 0.0  # after the first lease: queue_empty -> next lease
    tail_s: float = 0.0  # queue_empty -> end of the run, never leased again
    idle_by_reason: Counter[str] = field(default_factory=Counter)  # seconds, idle + tail
    idle_by_cycle_state: Counter[str] = field(default_factory=Counter)  # seconds, idle + tail
    reasons: Counter[str] = field(default_factory=Counter)
    cycle_states: Counter[str] = field(default_factory=Counter)  # cycle_state on queue_empty
    stop: str = ""
    errors: Counter[str] = field(default_factory=Counter)  # "GET 409 code" -> count


def _data_path(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    shared = os.environ.get("ANNOLOOP_SHARED_DATA")
    base = Path(shared) if shared else REPO.parent / "shared" / "data"
    return base / "music.npz"


def _ok(r: httpx.Response) -> Any:
    if r.status_code >= 400:
        raise RuntimeError(f"{r.request.method} {r.request.url} -> {r.status_code}: {r.text}")
    return r.json() if r.content else None


class Server:
    """``annoloop up`` from ``code`` on a free port with its own data folder."""

    def __init__(self, code: Path, data_dir: Path) -> None:
        self.code = code
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ANNOLOOP_")}
        self.env.update(
            ANNOLOOP_DATA_DIR=str(data_dir),
            ANNOLOOP_ENVIRONMENT="test",
            ANNOLOOP_RATE_LIMIT_LABELS_PER_MINUTE="0",
            # ``app`` and ``worker`` from the checkout, never from the venv's editable install.
            PYTHONPATH=str(code),
        )
        self.cli = [sys.executable, "-m", "app.cli"]
        self.log = data_dir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._running = ExitStack()
        self.url = ""
        self.token = ""

    def _run(self, *args: str) -> str:
        out = subprocess.run(
            [*self.cli, *args],
            cwd=self.code,
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout

    def start(self) -> None:
        self._run("migrate")
        self.token = self._run("create-admin", "--name", "bench-admin").strip().splitlines()[-1]
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        # One process group: the API and its worker stop together.
        self.proc = self._running.enter_context(
            started(
                [*self.cli, "up", "--port", str(port)],
                self.env,
                self.log,
                cwd=self.code,
                stop_timeout=60,
            )
        )
        wait_healthy(self.url, self.proc, self.log)

    def stop(self) -> None:
        self._running.close()


class Crowd:
    """A song's real answers, drawn with replacement, keyed by (seed, song, draw number)."""

    def __init__(self, answers: np.ndarray, seed: int) -> None:
        self.answers = [row[row >= 0].astype(int) for row in answers]
        self.seed = seed
        self.draws: Counter[int] = Counter()
        self.lock = threading.Lock()

    def start(self, song: int) -> int:
        rng = np.random.default_rng([self.seed, 2, song])
        return int(rng.choice(self.answers[song]))

    def relabel(self, song: int) -> int:
        with self.lock:
            n = self.draws[song]
            self.draws[song] += 1
        rng = np.random.default_rng([self.seed, 3, song, n])
        return int(rng.choice(self.answers[song]))


def setup_project(
    server: Server, args: argparse.Namespace, data: dict[str, np.ndarray], crowd: Crowd
) -> tuple[httpx.Client, int, list[tuple[str, str]]]:
    admin = httpx.Client(
        base_url=f"{server.url}/api/v1",
        headers={"Authorization": f"Bearer {server.token}"},
        timeout=120,
    )
    x = data["X_train"].astype(np.float32)
    x = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1.0)
    n = len(x)
    pid = _ok(
        admin.post(
            "/projects",
            json={
                "name": f"bench-idle {time.time_ns()}",
                "kind": "clean",
                "classes": [str(c) for c in data["classes"]],
                "model_spec": {
                    "name": "mlp",
                    "input_shape": [int(x.shape[1])],
                    "hparams": {"epochs": args.epochs},
                },
                "batch_size": args.batch_size,
                "relabel_budget": args.relabel_budget,
                "finetune_every": args.finetune_every,
                "seed": args.seed,
            },
        )
    )["id"]
    buf = io.BytesIO()
    np.savez(buf, features=x.astype(np.float32), external_ids=np.array([f"s{i}" for i in range(n)]))
    files = {"archive": ("music.npz", buf.getvalue(), "application/octet-stream")}
    _ok(admin.post(f"/projects/{pid}/items:bulk", files=files))
    rows = [
        {"external_id": f"s{i}", "annotator": "crowd", "class_index": crowd.start(i)}
        for i in range(n)
    ]
    _ok(admin.post(f"/projects/{pid}/annotations:import", json=rows))
    people = []
    stamp = time.time_ns()
    for k in range(args.annotators):
        person = _ok(admin.post("/annotators", json={"name": f"bench-{k}-{stamp}"}))
        _ok(admin.post(f"/projects/{pid}/members", json={"annotator_id": person["id"]}))
        people.append((f"a{k}", person["token"]))
    return admin, pid, people


class Run:
    def __init__(self, args: argparse.Namespace, url: str, pid: int, crowd: Crowd) -> None:
        self.args = args
        self.url = url
        self.pid = pid
        self.crowd = crowd
        self.t0 = time.monotonic()
        self.last_label = self.t0
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.stop_reason = ""

    def _end(self, why: str) -> None:
        with self.lock:
            if not self.stop_reason:
                self.stop_reason = why
        self.done.set()

    def annotate(self, stats: AnnotatorStats, token: str) -> None:
        client = httpx.Client(
            base_url=f"{self.url}/api/v1",
            headers={"Authorization": f"Bearer {token}"},
            timeout=120,
        )
        streak: float | None = None  # when the current run of queue_empty answers began
        last: tuple[float, str, str] | None = None  # the last queue_empty: time, reason, state
        leased_before = False

        def account(now: float) -> None:
            """Time since the last queue_empty goes to its reason (after the first lease)."""
            if last is not None and leased_before:
                stats.idle_by_reason[last[1]] += now - last[0]
                stats.idle_by_cycle_state[last[2]] += now - last[0]

        try:
            while not self.done.is_set():
                now = time.monotonic()
                if now - self.t0 > self.args.cap:
                    self._end("cap")
                    stats.stop = "cap"
                    break
                if now - self.last_label > self.args.stall:
                    self._end("stall")
                    stats.stop = "stall"
                    break
                r = client.get(f"/projects/{self.pid}/next")
                if r.status_code >= 400:
                    stats.errors[_error(r)] += 1
                    time.sleep(self.args.poll)
                    continue
                nxt = r.json()
                status = nxt["status"]
                if status == "budget_spent":
                    self._end("budget_spent")
                    stats.stop = "budget_spent"
                    break
                now = time.monotonic()
                if status == "queue_empty":
                    account(now)
                    stats.empty += 1
                    reason = nxt.get("reason") or "-"
                    state = str(nxt.get("cycle_state"))
                    stats.reasons[reason] += 1
                    stats.cycle_states[state] += 1
                    last = (now, reason, state)
                    if streak is None:
                        streak = now
                    if reason == "pool_spent":
                        self._end("pool_spent")
                        stats.stop = "pool_spent"
                        break
                    self.done.wait(self.args.poll)
                    continue
                if streak is not None:
                    account(now)
                    if leased_before:
                        stats.idle_s += now - streak
                    else:
                        stats.startup_s += now - streak
                    streak = last = None
                leased_before = True
                item = nxt["item"]
                song = int(item["external_id"][1:])
                if self.args.think > 0:
                    time.sleep(self.args.think)
                body = {
                    "class_index": self.crowd.relabel(song),
                    "idempotency_key": f"bench-{stats.name}-item-{item['id']}",
                }
                r = client.post(f"/items/{item['id']}/annotations", json=body)
                if r.status_code == 409 and "budget_spent" in r.text:
                    self._end("budget_spent")
                    stats.stop = "budget_spent"
                    break
                if r.status_code >= 400:
                    stats.errors[_error(r)] += 1
                    time.sleep(self.args.poll)
                    continue
                stats.labels += 1
                with self.lock:
                    self.last_label = time.monotonic()
        finally:
            if streak is not None:
                now = time.monotonic()
                account(now)
                if leased_before:
                    stats.tail_s += now - streak
                else:
                    stats.startup_s += now - streak
            if not stats.stop:
                stats.stop = self.stop_reason or "?"
            client.close()


def _error(r: httpx.Response) -> str:
    try:
        code = r.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        code = r.text[:80]
    return f"{r.request.method} {r.status_code} {code}"


def _rounded(seconds: Counter[str]) -> dict[str, float]:
    return {k: round(v, 1) for k, v in seconds.most_common()}


def _seconds(timings: dict[str, Any]) -> dict[str, float]:
    return {
        k: round(float(v), 2)
        for k, v in timings.items()
        if k.endswith("_s") and isinstance(v, int | float) and not isinstance(v, bool)
    }


def accuracy(admin: httpx.Client, pid: int, truth: np.ndarray) -> tuple[float, int]:
    rows = _ok(admin.get(f"/projects/{pid}/export", params={"format": "json"}))
    right = 0
    relabelled = 0
    for row in rows:
        song = int(row["external_id"][1:])
        right += row["class_index"] is not None and int(row["class_index"]) == int(truth[song])
        relabelled += bool(row.get("relabelled"))
    return right / len(truth), relabelled


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--code", type=Path, default=REPO, help="checkout to run the server from")
    parser.add_argument("--data", help="music.npz (default: ../shared/data next to this repo)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--annotators", type=int, default=3)
    parser.add_argument("--think", type=float, default=0.2, help="seconds before each label")
    parser.add_argument("--poll", type=float, default=0.5, help="seconds after a queue_empty")
    parser.add_argument("--cap", type=float, default=900.0, help="wall-clock cap, seconds")
    parser.add_argument("--stall", type=float, default=300.0, help="stop after this long, no label")
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--relabel-budget", type=int, default=300)
    parser.add_argument("--finetune-every", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the scratch data folder")
    args = parser.parse_args()

    code = args.code.resolve()
    data = dict(np.load(_data_path(args.data)))
    crowd = Crowd(data["answers"], args.seed)
    scratch = Path(tempfile.mkdtemp(prefix="bench-idle-"))
    server = Server(code, scratch)
    commit = subprocess.run(
        ["git", "-C", str(code), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    try:
        server.start()
        admin, pid, people = setup_project(server, args, data, crowd)
        _ok(admin.post(f"/projects/{pid}/cycles", json={}))
        run = Run(args, server.url, pid, crowd)
        stats = [AnnotatorStats(name) for name, _ in people]
        threads = [
            threading.Thread(target=run.annotate, args=(s, tok), daemon=True)
            for s, (_, tok) in zip(stats, people, strict=True)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - run.t0
        cycles = _ok(admin.get(f"/projects/{pid}/cycles"))
        acc, relabelled = accuracy(admin, pid, data["y_train"])
        project = _ok(admin.get(f"/projects/{pid}"))
        admin.close()
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)

    result = {
        "code": str(code),
        "commit": commit,
        "seed": args.seed,
        "settings": {
            k: getattr(args, k)
            for k in (
                "annotators",
                "think",
                "poll",
                "cap",
                "stall",
                "batch_size",
                "relabel_budget",
                "finetune_every",
                "epochs",
            )
        },
        "stop": run.stop_reason,
        "wall_s": round(wall, 1),
        "labels": sum(s.labels for s in stats),
        "labels_spent": project.get("labels_spent"),
        "queue_empty": sum(s.empty for s in stats),
        "startup_s": round(sum(s.startup_s for s in stats), 1),
        "idle_s": round(sum(s.idle_s for s in stats), 1),
        "tail_s": round(sum(s.tail_s for s in stats), 1),
        "reasons": dict(sum((s.reasons for s in stats), Counter())),
        "idle_by_reason": _rounded(sum((s.idle_by_reason for s in stats), Counter())),
        "idle_by_cycle_state": _rounded(sum((s.idle_by_cycle_state for s in stats), Counter())),
        "cycles": len(cycles),
        "cycle_states": dict(Counter(c["state"] for c in cycles)),
        "cycle_timings": [
            {"number": c["number"], "state": c["state"], **_seconds(c.get("timings") or {})}
            for c in sorted(cycles, key=lambda c: c["number"])
        ],
        "relabelled_songs": relabelled,
        "accuracy": round(acc, 4),
        "annotators": [
            {
                **asdict(s),
                "startup_s": round(s.startup_s, 1),
                "idle_s": round(s.idle_s, 1),
                "tail_s": round(s.tail_s, 1),
                "reasons": dict(s.reasons),
                "cycle_states": dict(s.cycle_states),
                "idle_by_reason": _rounded(s.idle_by_reason),
                "idle_by_cycle_state": _rounded(s.idle_by_cycle_state),
                "errors": dict(s.errors),
            }
            for s in stats
        ],
    }
    print(f"code {code} ({commit}), seed {args.seed}, stop: {run.stop_reason}")
    head = ["labels", "empty", "start_s", "idle_s", "tail_s"]
    print(f"{'annotator':<10}" + "".join(f"{h:>9}" for h in head) + "  idle s by reason")
    for s in stats:
        cells = [s.labels, s.empty, f"{s.startup_s:.1f}", f"{s.idle_s:.1f}", f"{s.tail_s:.1f}"]
        by = ", ".join(f"{k} {v:.1f}" for k, v in s.idle_by_reason.most_common()) or "-"
        print(f"{s.name:<10}" + "".join(f"{c:>9}" for c in cells) + f"  {by}")
    total = [result[k] for k in ("labels", "queue_empty", "startup_s", "idle_s", "tail_s")]
    print(f"{'total':<10}" + "".join(f"{c:>9}" for c in total))
    for s in stats:
        if s.errors:
            print(f"{s.name} errors: {dict(s.errors)}")
    print(f"queue_empty answers by reason: {result['reasons']}")
    print(f"idle s by cycle_state: {result['idle_by_cycle_state']}")
    print(
        f"cycles {result['cycles']} {result['cycle_states']}, wall {result['wall_s']} s, "
        f"labels spent {result['labels_spent']}, songs relabelled {relabelled}, "
        f"accuracy {acc:.4f}"
    )
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
