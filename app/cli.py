"""The ``annoloop`` command: run the API, a worker, both (``up``), migrations, accounts, blobs;
and the engineer's client verbs (project, items, labels, cycle, export, status)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from app.core.config import get_settings
from app.observability.logs import configure_logging, log_config


def migrate(url: str | None = None) -> None:
    """``alembic upgrade head`` with the migrations shipped in the package, then (Postgres)
    the hot path's functions from their source files, every time: a function changed by
    hand or left by older code is replaced (``app.fastpath.functions``)."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy.engine import make_url

    import migrations
    from app.core.db import make_engine
    from app.fastpath import functions

    if url is None:
        get_settings().ensure_dirs()  # the embedded SQLite file's folder, on a fresh machine
    url = url or get_settings().database_url
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    cfg.set_main_option("sqlalchemy.url", url)
    command.upgrade(cfg, "head")
    if make_url(url).get_backend_name() != "postgresql":
        return  # SQLite runs the rules in Python only
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            functions.install(conn)
    finally:
        engine.dispose()


def _create_admin(name: str) -> None:
    from sqlalchemy import inspect

    from app.auth import repository
    from app.auth.service import create_annotator, issue_token
    from app.core.db import make_engine, make_session_factory, unit_of_work
    from app.core.enums import Role

    settings = get_settings()
    settings.ensure_dirs()
    engine = make_engine(settings.database_url)
    if not inspect(engine).has_table("annotator"):
        engine.dispose()
        sys.exit("the database has no annoloop schema yet: run `annoloop migrate` first")
    with unit_of_work(make_session_factory(engine)) as db:
        admin = repository.annotator_by_name(db, name) or create_annotator(
            db, actor=None, name=name, role=Role.admin
        )
        if admin.role is not Role.admin:
            sys.exit(f"{name!r} exists and is not an admin")
        token, _ = issue_token(db, admin, settings.secret_key, label="create-admin")
    engine.dispose()
    print(token)


def _prepare_blob_store() -> None:
    """``annoloop migrate`` also makes the bucket, so compose needs no extra step for it."""
    settings = get_settings()
    if not settings.blob_url:
        return
    from app.core.blob_s3 import S3BlobStore

    store = S3BlobStore.from_url(
        settings.blob_url, endpoint_url=settings.s3_endpoint_url, region=settings.s3_region
    )
    if store.ensure_bucket():
        print(f"created the bucket {store.bucket} for {store.location}")


def _migrate_blobs(to: str, source: str | None, verify: bool, jobs: int) -> None:
    from app.core.blob_migrate import CORRUPT, FAILED, migrate
    from app.core.blobs import LocalBlobStore, store_for_url

    settings = get_settings()
    target = to or settings.blob_url
    if not target:
        sys.exit("annoloop blobs migrate: name the target with --to s3://bucket/prefix")
    folder = LocalBlobStore(Path(source) if source else settings.blobs)
    if not folder.root.is_dir():
        sys.exit(f"annoloop blobs migrate: {folder.root} is not a folder")
    counts = migrate(folder, store_for_url(target, settings), verify=verify, jobs=jobs)
    sys.exit(1 if counts[CORRUPT] or counts[FAILED] else 0)


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
    from app.supervise import die_with_parent

    die_with_parent()  # a no-op unless ``annoloop up`` started this worker
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
        **proxy_options(get_settings().trusted_proxy_list),
        timeout_graceful_shutdown=20,
        http="app.core.send_timeout:HttpProtocol",  # drops clients that stop reading
        log_level=get_settings().log_level.lower(),
        log_config=log_config(),  # JSON/text with request ids, in every uvicorn process
        access_log=False,  # the request-id middleware writes the access line
    )


def proxy_options(trusted: list[str]) -> dict[str, Any]:
    """uvicorn believes ``X-Forwarded-*`` only from ANNOLOOP_TRUSTED_PROXIES. Its defaults
    (on, from 127.0.0.1 or $FORWARDED_ALLOW_IPS) let any local process, or a proxy that
    passes the header through, rotate the client address past the failed-token limit."""
    if not trusted:
        return {"proxy_headers": False}
    return {"proxy_headers": True, "forwarded_allow_ips": trusted}


def _up(host: str, port: int, demo: bool) -> None:
    from app.supervise import Supervised

    migrate()
    worker = Supervised([sys.executable, "-m", "app.cli", "worker"], {**os.environ})
    try:
        if demo:
            _announce_demo(host, port)
        _run_api(host, port, workers=1)
    finally:
        worker.stop()


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

    sub.add_parser(
        "migrate", help="upgrade the database schema; create the S3 bucket if it is missing"
    )

    admin = sub.add_parser("create-admin", help="create an admin (if needed) and print a token")
    admin.add_argument("--name", default="admin")

    blobs = sub.add_parser("blobs", help="blob store tools").add_subparsers(
        dest="blobs_command", required=True
    )
    move = blobs.add_parser(
        "migrate",
        help="copy the blob folder into another store (resumable; the folder is kept)",
    )
    move.add_argument(
        "--to", default="", help="s3://bucket/prefix or a folder; default ANNOLOOP_BLOB_URL"
    )
    move.add_argument("--from", dest="source", help="the folder; default ANNOLOOP_BLOB_DIR")
    move.add_argument("--verify", action="store_true", help="read every copy back and hash it")
    move.add_argument("--jobs", type=int, default=8, help="blobs in flight at once")

    sub.add_parser(
        "bench", help="benchmark the acquisition kernels; `annoloop bench --help` for options"
    )

    sub.add_parser(
        "simulate",
        help="active learning with simulated annotators; `annoloop simulate --help` for options",
    )

    from annoloop.client.cli import VERBS

    for verb in VERBS:
        sub.add_parser(verb, help=f"client: `annoloop {verb} --help` (talks to a server over HTTP)")

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] and argv[0] in VERBS:  # the client parses its own options, needs httpx only
        from annoloop.client.cli import main as client_main

        sys.exit(client_main(argv))
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
        _prepare_blob_store()
    elif args.command == "create-admin":
        _create_admin(args.name)
    elif args.command == "blobs":
        _migrate_blobs(args.to, args.source, args.verify, max(1, args.jobs))


if __name__ == "__main__":
    main()
