"""Labelling beside clients that never read: throughput and tail with and without them.

    .venv/bin/python scripts/bench_slow_readers.py --backend sqlite
    .venv/bin/python scripts/bench_slow_readers.py --backend postgres --seconds 20

One server (as ``scripts/bench_load.py`` starts it), phases in the same run: ``--clients``
annotators label for ``--seconds`` alone, then beside ``--readers`` connections that each
ask for a ~2 MB image three times (pipelined) and read nothing (issue 15: four such
connections stopped the API), then alone again, ``--rounds`` times over (alone, beside,
alone, beside, ..., alone). The rate drifts as the tables grow (on Postgres it fell by a
quarter between consecutive 20-s phases), so each readers' phase is compared with the mean
of the two alone phases around it, and short phases keep that drift small. Prints labels/s
and the p99 of next and submit per phase, and each readers' phase against its neighbours;
the target is >= 90 % of the labels/s kept (median over the rounds) and a p99 under 200 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import signal
import socket
import sys
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_load import Log, _annotate, _la, _settle
from bench_load_setup import World, build_world, embedded_server, postgres_server, workdir


def _big_image_item(world: World) -> tuple[int, str]:
    """An image project holding one ~2 MB PNG; (item id, an engineer's token to read it)."""
    admin = _admin_token(world)
    noise = np.random.default_rng(0).integers(0, 256, (820, 820, 3), dtype=np.uint8)
    png = io.BytesIO()
    Image.fromarray(noise, mode="RGB").save(png, format="PNG", compress_level=1)
    with httpx.Client(
        base_url=world.server.base, headers={"Authorization": f"Bearer {admin}"}, timeout=60
    ) as http:
        r = http.post(
            "/api/v1/projects",
            json={
                "name": f"big-{uuid.uuid4().hex[:6]}",
                "classes": ["a", "b"],
                "model_spec": {"name": "small_cnn", "input_shape": [3, 32, 32]},
            },
        )
        r.raise_for_status()
        r = http.post(
            f"/api/v1/projects/{r.json()['id']}/items",
            files={"file": ("big.png", png.getvalue(), "image/png")},
        )
        r.raise_for_status()
        return int(r.json()["id"]), admin


def _admin_token(world: World) -> str:
    from app.auth.service import create_annotator, issue_token
    from app.core.config import DEFAULT_SECRET
    from app.core.db import make_engine, make_session_factory, unit_of_work
    from app.core.enums import Role

    engine = make_engine(world.server.db_url)
    try:
        with unit_of_work(make_session_factory(engine)) as db:
            who = create_annotator(db, actor=None, name="slow-admin", role=Role.admin)
            return issue_token(db, who, DEFAULT_SECRET)[0]
    finally:
        engine.dispose()


async def _never_read(base: str, item: int, token: str, t_end: float, opened: list[int]) -> None:
    """Asks for the image and reads nothing; reconnects if the server drops it."""
    host, port = base.removeprefix("http://").split(":")
    request = (
        f"GET /api/v1/items/{item}/payload HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {token}\r\n\r\n"
    ).encode()
    while time.perf_counter() < t_end:
        _, writer = await asyncio.open_connection(host, int(port), limit=4096)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        writer.write(request * 3)
        opened[0] += 1
        while time.perf_counter() < t_end and not writer.is_closing():
            await asyncio.sleep(0.5)
            if writer.transport.is_closing():
                break
        writer.close()


async def _phase(world: World, seconds: float, readers: int, big: tuple[int, str]) -> Log:
    log = Log()
    t_end = time.perf_counter() + seconds
    opened = [0]
    slow = [
        asyncio.create_task(_never_read(world.server.base, big[0], big[1], t_end, opened))
        for _ in range(readers)
    ]
    if readers:
        await asyncio.sleep(0.5)  # they are in and stuck before labelling starts
        t_end = time.perf_counter() + seconds
    await asyncio.gather(
        *(
            _annotate(world.server.base, world.project_id, person, t_end, log)
            for person in world.annotators
        )
    )
    for task in slow:
        task.cancel()
    await asyncio.gather(*slow, return_exceptions=True)
    return log


def _figures(log: Log, seconds: float) -> tuple[float, float]:
    ms = log.next_ms + log.submit_ms
    return len(log.acks) / seconds, float(np.percentile(ms, 99)) if ms else float("inf")


def run(
    backend: str, clients: int, readers: int, seconds: float, rounds: int, args: argparse.Namespace
) -> bool:
    with workdir() as tmp:
        server_cm = (
            postgres_server(args.postgres_url, args.redis_url, tmp)
            if backend == "postgres"
            else embedded_server(tmp)
        )
        with server_cm as server:
            world = build_world(server, clients, int(900 * seconds * (2 * rounds + 1)))
            big = _big_image_item(world)
            idle = _settle()
            print(f"[{backend}] set up; CPU {idle:.0%} idle; load {_la(os.getloadavg())}")
            phases = [
                asyncio.run(_phase(world, seconds, readers if i % 2 else 0, big))
                for i in range(2 * rounds + 1)
            ]
            print(f"[{backend}] load average after {_la(os.getloadavg())}")
    figures = [_figures(log, seconds) for log in phases]
    print(f"\n== {backend}: {clients} labelling clients, {seconds:g} s per phase")
    kept: list[float] = []
    worst_p99 = 0.0
    for i, ((rate, p99), log) in enumerate(zip(figures, phases, strict=True)):
        what = f"beside {readers} readers" if i % 2 else "alone"
        line = f"{i + 1:2} {what:19} {rate:7.1f} labels/s  p99 {p99:6.1f} ms"
        if i % 2:
            around = (figures[i - 1][0] + figures[i + 1][0]) / 2
            kept.append(rate / around if around else 0.0)
            worst_p99 = max(worst_p99, p99)
            line += f"  kept {kept[-1]:.0%} of the phases around it"
        print(f"{line}  errors {dict(log.errors)}")
    median = float(np.median(kept))
    print(f"kept (median of {rounds}) {median:.0%}; worst p99 beside readers {worst_p99:.1f} ms")
    ok = median >= 0.9 and worst_p99 < 200
    print(f"{'PASS' if ok else 'FAIL'}  {backend}: >= 90 % kept and p99 < 200 ms beside readers")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["postgres", "sqlite", "both"], default="both")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--readers", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(
            "ANNOLOOP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("ANNOLOOP_TEST_REDIS_URL", "redis://127.0.0.1:6379/11"),
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print(f"machine: {os.cpu_count()} cores; the load generator shares them with the API")
    backends = ["postgres", "sqlite"] if args.backend == "both" else [args.backend]
    ok = True
    for backend in backends:
        ok &= run(backend, args.clients, args.readers, args.seconds, args.rounds, args)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
