"""Where the test databases and brokers are, and building fresh migrated databases.

``ANNOLOOP_TEST_BACKENDS`` (default ``sqlite,postgres``) picks the database backends;
Postgres and Redis URLs come from ``ANNOLOOP_TEST_POSTGRES_URL`` / ``ANNOLOOP_TEST_REDIS_URL``.
A backend that is asked for but unreachable makes its tests fail, never skip.
"""

from __future__ import annotations

import atexit
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from app.cli import migrate

POSTGRES_ADMIN_URL = os.environ.get(
    "ANNOLOOP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("ANNOLOOP_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
BACKENDS = [
    b.strip() for b in os.environ.get("ANNOLOOP_TEST_BACKENDS", "sqlite,postgres").split(",")
]


def _url(name: str) -> str:
    return make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


_template: list[str] = []  # this process's migrated template database, once made


def _migrated_template(admin: Engine) -> str:
    """A database migrated once per test process, which each migrated one is a copy of: a
    copy takes ~0.2 s where the migrations take ~0.8 s, tens of times a run. No one may
    connect to it (Postgres refuses to copy a database in use); dropped when pytest exits."""
    if not _template:
        name = f"annoloop_template_{uuid.uuid4().hex[:12]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        atexit.register(_drop, name)
        migrate(_url(name))
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false'))
        _template.append(name)
    return _template[0]


def _drop(name: str) -> None:
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@contextmanager
def fresh_postgres(migrated: bool = True) -> Iterator[str]:
    """A new Postgres database, empty or migrated (a copy of the migrated template); dropped
    afterwards."""
    name = f"annoloop_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        template = f' TEMPLATE "{_migrated_template(admin)}"' if migrated else ""
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"{template}'))
        yield _url(name)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def fresh_sqlite(directory: Path, migrated: bool = True) -> Iterator[str]:
    url = f"sqlite:///{directory / f'test-{uuid.uuid4().hex[:8]}.sqlite'}"
    if migrated:
        migrate(url)
    yield url


@contextmanager
def fresh_database(backend: str, directory: Path, migrated: bool = True) -> Iterator[str]:
    if backend == "postgres":
        with fresh_postgres(migrated) as url:
            yield url
    elif backend == "sqlite":
        with fresh_sqlite(directory, migrated) as url:
            yield url
    else:
        raise ValueError(f"unknown test backend {backend!r}")
