"""The ``annoloop`` command: run the API, a worker, both (``up``), migrations, accounts."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from app.core.config import get_settings
from app.observability.logs import configure_logging, log_config


def migrate(url: str | None = None) -> None:
    """``alembic upgrade head`` with the migrations shipped in the package."""
    from alembic import command
    from alembic.config import Config

    import migrations

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    cfg.set_main_option("sqlalchemy.url", url or get_settings().database_url)
    command.upgrade(cfg, "head")


def _create_admin(name: str) -> None:
    from app.auth import repository
    from app.auth.service import create_annotator, issue_token
    from app.core.db import make_engine, make_session_factory, unit_of_work
    from app.core.enums import Role

    settings = get_settings()
    engine = make_engine(settings.database_url)
    with unit_of_work(make_session_factory(engine)) as db:
        admin = repository.annotator_by_name(db, name) or create_annotator(
            db, actor=None, name=name, role=Role.admin
        )
        if admin.role is not Role.admin:
            sys.exit(f"{name!r} exists and is not an admin")
        token, _ = issue_token(db, admin, settings.secret_key, label="create-admin")
    engine.dispose()
    print(token)


def worker_argv(queues: str, concurrency: int, loglevel: str) -> list[str]:
    return [
        "worker",
        "--queues",
        queues,
        "--concurrency",
        str(concurrency),
        "--prefetch-multiplier",
        "1",
        "--loglevel",
        loglevel,
        "--without-gossip",
        "--without-mingle",
    ]


def _run_worker(queues: str, concurrency: int | None, name: str | None = None) -> None:
    from worker.celery_app import celery_app

    settings = get_settings()
    argv = worker_argv(queues, concurrency or settings.worker_concurrency, settings.log_level)
    # A distinct node name per worker on one host (Celery's -n, e.g. "w1@%h").
    celery_app.worker_main(argv + (["--hostname", name] if name else []))


def _run_api(host: str, port: int, workers: int) -> None:
    import uvicorn

    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        timeout_graceful_shutdown=20,
        log_level=get_settings().log_level.lower(),
        log_config=log_config(),  # JSON/text with request ids, in every uvicorn process
        access_log=False,  # the request-id middleware writes the access line
    )


def _up(host: str, port: int, demo: bool) -> None:
    settings = get_settings()
    settings.ensure_dirs()
    migrate()
    worker = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker"],
        env={**os.environ},
        preexec_fn=_die_with_parent,  # safe: no threads exist yet at this point
    )
    try:
        if demo:
            _announce_demo(host, port)
        _run_api(host, port, workers=1)
    finally:
        _stop(worker)


def _announce_demo(host: str, port: int) -> None:
    from app.core.db import make_engine, make_session_factory
    from app.core.tasks import CelerySender
    from app.demo.seed import create_demo
    from worker.celery_app import create_celery

    settings = get_settings()
    engine = make_engine(settings.database_url)
    demo = create_demo(
        make_session_factory(engine), settings, CelerySender(create_celery(settings))
    )
    engine.dispose()
    url = f"http://{host}:{port}"
    print(
        f"\nannoloop demo ready: project {demo.project_id}, cycle {demo.cycle_number}\n"
        f"  open        {url}/\n"
        f"  API docs    {url}/docs\n"
        f"  admin token      {demo.admin_token}\n"
        f"  annotator token  {demo.annotator_token}\n",
        flush=True,
    )


def _die_with_parent() -> None:
    """Linux: the worker gets SIGTERM if ``annoloop up`` itself is killed, never orphaned."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)  # Celery's warm shutdown: finish or hand back the task
    deadline = time.monotonic() + 30
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="annoloop", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="migrate, then run the API and a worker (embedded default)")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=8000)
    up.add_argument("--demo", action="store_true", help="create the MNIST demo and start it")

    api = sub.add_parser("api", help="run the API server")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.add_argument("--workers", type=int, default=1)

    wk = sub.add_parser("worker", help="run a Celery worker")
    wk.add_argument("--queues", default="default,train,score")
    wk.add_argument("--concurrency", type=int, default=None)
    wk.add_argument("--name", default=None, help="Celery node name, e.g. w1@%%h")

    sub.add_parser("migrate", help="upgrade the database schema to the newest revision")

    admin = sub.add_parser("create-admin", help="create an admin (if needed) and print a token")
    admin.add_argument("--name", default="admin")

    sub.add_parser(
        "bench", help="benchmark the acquisition kernels; `annoloop bench --help` for options"
    )

    sub.add_parser(
        "simulate",
        help="active learning with simulated annotators; `annoloop simulate --help` for options",
    )

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # the benchmark parses its own options
        from worker.bench import main as bench_main

        sys.exit(bench_main(argv[1:]))
    if argv[:1] == ["simulate"]:  # so does the simulation harness (worker/sim)
        from worker.sim.cli import main as simulate_main

        sys.exit(simulate_main(argv[1:]))
    args = parser.parse_args(argv)
    configure_logging()  # ANNOLOOP_LOG_FORMAT=json: one JSON object per line
    if args.command == "up":
        _up(args.host, args.port, args.demo)
    elif args.command == "api":
        _run_api(args.host, args.port, args.workers)
    elif args.command == "worker":
        _run_worker(args.queues, args.concurrency, args.name)
    elif args.command == "migrate":
        migrate()
    elif args.command == "create-admin":
        _create_admin(args.name)


if __name__ == "__main__":
    main()
