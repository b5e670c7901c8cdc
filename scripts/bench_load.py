"""Load benchmark: concurrent annotators doing next → submit loops against a real API.

    .venv/bin/python scripts/bench_load.py                       # both backends, 50 × 60 s
    .venv/bin/python scripts/bench_load.py --backend postgres --clients 50 --seconds 60

``postgres``: the API under uvicorn with 2 workers on a new database ``annoloop_bench_<pid>``
(dropped afterwards) and Redis db 11 (flushed before and after). ``sqlite``: ``annoloop up``
(SQLite + the embedded broker) in a temporary folder. Each gets a project of feature vectors
with one queue entry per item, wanting one label each, and ``--clients`` annotators.

The clients speak HTTP/1.1 over asyncio streams (one keep-alive connection each) rather than
through httpx: the load generator shares the machine's cores with the API and the database,
and a lean client leaves more of them to the server. Rate limits are off
(``ANNOLOOP_RATE_LIMIT_LABELS_PER_MINUTE=0``): the figures are about the API, not a limit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_load_setup import (
    NO_RATE_LIMITS,
    World,
    build_world,
    embedded_server,
    postgres_server,
    workdir,
)
from bench_load_verify import DUPLICATE_KEYS, Ack, verify

TARGETS = {  # labels/s at least, p99 (ms) below or None, duplicates must be zero
    "postgres": (300.0, 200.0),
    "sqlite": (100.0, None),
}


class Http:
    """One keep-alive HTTP/1.1 connection; reconnects after the server closes it."""

    def __init__(self, host: str, port: int, token: str) -> None:
        self.host, self.port = host, port
        self.auth = f"Authorization: Bearer {token}\r\n"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n{self.auth}"
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)
        try:
            status_line = await self.reader.readuntil(b"\r\n")
            headers = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            self.writer.close()
            self.writer = None
            raise
        length, close = 0, False
        for line in headers.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
            elif name.lower() == b"connection" and value.strip().lower() == b"close":
                close = True
        data = await self.reader.readexactly(length)
        if close:
            self.writer.close()
            self.writer = None
        return int(status_line.split()[1]), data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


@dataclass
class Log:
    next_ms: list[float] = field(default_factory=list)
    submit_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    acks: list[Ack] = field(default_factory=list)
    queue_empty_at: float | None = None


async def _annotate(base: str, pid: int, person: tuple[int, str], t_end: float, log: Log) -> None:
    host, port = base.removeprefix("http://").split(":")
    http = Http(host, int(port), person[1])
    try:
        while time.perf_counter() < t_end:
            t0 = time.perf_counter()
            try:
                status, body = await http.request("GET", f"/api/v1/projects/{pid}/next")
            except (OSError, asyncio.IncompleteReadError) as exc:
                log.errors[f"next {type(exc).__name__}"] += 1
                await asyncio.sleep(0.1)
                continue
            t1 = time.perf_counter()
            log.next_ms.append((t1 - t0) * 1000)
            if status != 200:
                log.errors[f"next {status}"] += 1
                continue
            nxt = json.loads(body)
            if nxt["status"] != "leased":
                log.queue_empty_at = log.queue_empty_at or t1
                return
            item = int(nxt["item"]["id"])
            payload = json.dumps(
                {"class_index": item % 10, "idempotency_key": uuid.uuid4().hex}
            ).encode()
            try:
                status, body = await http.request(
                    "POST", f"/api/v1/items/{item}/annotations", payload
                )
            except (OSError, asyncio.IncompleteReadError) as exc:
                log.errors[f"submit {type(exc).__name__}"] += 1
                continue
            t2 = time.perf_counter()
            log.submit_ms.append((t2 - t1) * 1000)
            if status in (200, 201):
                log.acks.append(Ack(int(json.loads(body)["id"]), item, person[0], t1, t2))
            else:
                log.errors[f"submit {status}"] += 1
    finally:
        http.close()


async def _load(world: World, seconds: float) -> tuple[Log, float]:
    log = Log()
    t_start = time.perf_counter()
    t_end = t_start + seconds
    await asyncio.gather(
        *(
            _annotate(world.server.base, world.project_id, person, t_end, log)
            for person in world.annotators
        )
    )
    # Labels/s over the time the clients had work (the queue can run dry first).
    return log, (log.queue_empty_at or time.perf_counter()) - t_start


def _settle(want_idle: float = 0.9, most_s: float = 90.0) -> float:
    """Wait (up to ``most_s``) until the machine is idle: the setup's inserts, the analyse
    and an earlier run's checkpoint otherwise still use the cores the run is measured on
    (back-to-back runs differed by 25 %). Returns the idle share of the last 2 s."""
    deadline = time.monotonic() + most_s
    while True:
        before = _cpu_ticks()
        time.sleep(2)
        after = _cpu_ticks()
        busy, total = after[0] - before[0], after[1] - before[1]
        idle = 1 - busy / max(total, 1)
        if idle >= want_idle or time.monotonic() > deadline:
            return idle


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) ticks of the whole machine since boot, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _cpu_seconds(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return total


def _windows(acks: list[Ack], width: float = 10.0) -> str:
    """Labels/s in consecutive windows: whether the rate holds over the run or sinks."""
    if not acks:
        return "no labels"
    start = min(a.leased_at for a in acks)
    counts = Counter(int((a.acked_at - start) // width) for a in acks)
    return " ".join(f"{counts.get(k, 0) / width:.0f}" for k in range(max(counts) + 1))


def _pcts(ms: list[float]) -> str:
    if not ms:
        return "no requests"
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return f"p50 {p50:6.1f} ms  p95 {p95:6.1f} ms  p99 {p99:6.1f} ms  (n={len(ms)})"


def run_one(backend: str, clients: int, seconds: float, items: int, args: Any) -> bool:
    with workdir() as tmp:
        server_cm = (
            postgres_server(args.postgres_url, args.redis_url, tmp)
            if backend == "postgres"
            else embedded_server(tmp)
        )
        with server_cm as server:
            world = build_world(server, clients, items)
            idle = _settle()
            print(
                f"[{backend}] set up; CPU {idle:.0%} idle; {clients} clients labelling for "
                f"{seconds:g} s",
                flush=True,
            )
            load_before = os.getloadavg()
            cpu_server, cpu_client = _cpu_seconds(server.pids), time.process_time()
            log, elapsed = asyncio.run(_load(world, seconds))
            cpu_server = _cpu_seconds(server.pids) - cpu_server
            cpu_client = time.process_time() - cpu_client
            load_after = os.getloadavg()
            checks = verify(server.db_url, world.project_id, log.acks)
            kept = Path(tempfile.gettempdir()) / f"annoloop-bench-{backend}.log"
            shutil.copyfile(server.log, kept)
    rate = len(log.acks) / elapsed
    duplicates = sum(checks[k] for k in DUPLICATE_KEYS)
    what = "uvicorn, 2 workers, Postgres + Redis" if backend == "postgres" else "annoloop up"
    print(f"\n== {backend}: {what}; {clients} clients, {seconds:g} s, {world.items} queued items")
    print(f"load average before {_la(load_before)}, after {_la(load_after)}")
    print(
        f"CPU used: API processes {cpu_server:.1f} s, load generator {cpu_client:.1f} s "
        f"(of {elapsed * (os.cpu_count() or 1):.0f} core-seconds on {os.cpu_count()} cores)"
    )
    if log.queue_empty_at:
        print(f"the queue ran dry after {elapsed:.1f} s: raise --items")
    print(f"labels/s  {rate:8.1f}   ({len(log.acks)} labels in {elapsed:.1f} s)")
    print(f"by 10 s   {_windows(log.acks)}")
    print(f"next      {_pcts(log.next_ms)}")
    print(f"submit    {_pcts(log.submit_ms)}")
    print(f"errors    {dict(log.errors) or 'none'}  (server log: {kept})")
    print(f"checks    {checks}")
    want_rate, want_p99 = TARGETS[backend]
    p99 = max(float(np.percentile(ms, 99)) if ms else 0.0 for ms in (log.next_ms, log.submit_ms))
    ok = _verdict(f"{backend}: >= {want_rate:g} labels/s", rate >= want_rate)
    if want_p99 is not None:
        ok &= _verdict(f"{backend}: p99 of next and submit < {want_p99:g} ms", p99 < want_p99)
    ok &= _verdict(f"{backend}: no label lost", checks["lost"] == 0)
    ok &= _verdict(f"{backend}: zero duplicates", duplicates == 0)
    return ok


def _la(values: tuple[float, float, float]) -> str:
    return " ".join(f"{v:.2f}" for v in values)


def _verdict(what: str, passed: bool) -> bool:
    print(f"{'PASS' if passed else 'FAIL'}  {what}")
    return passed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["postgres", "sqlite", "both"], default="both")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument(
        "--items", type=int, default=0, help="queued items (default: 700 per second of load)"
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(
            "ANNOLOOP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
        ),
        help="a server where the benchmark may create and drop a database",
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/11")
    args = parser.parse_args(argv)
    # Stopped with SIGTERM, still stop the servers and drop the database (finally blocks).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    items = args.items or int(700 * args.seconds)
    print(f"machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}")
    print(f"rate limits off for the benchmark: {NO_RATE_LIMITS}")
    print("the load generator runs on the same cores as the API and the database")
    backends = ["postgres", "sqlite"] if args.backend == "both" else [args.backend]
    ok = True
    for backend in backends:
        ok &= run_one(backend, args.clients, args.seconds, items, args)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
