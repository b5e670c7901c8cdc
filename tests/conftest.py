"""Shared fixtures: migrated databases per backend, an API client whose every test runs in
a transaction that is rolled back, and accounts with tokens."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, Engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

import app.db_models as models
from app.auth.service import create_annotator, issue_token
from app.core.config import Settings
from app.core.db import make_engine
from app.core.enums import Role
from app.core.tasks import bind_sender
from app.main import create_app
from tests.backends import BACKENDS, fresh_database
from tests.integration.processes import leftovers
from tests.services import RecordingSender


@pytest.hookimpl(trylast=True)  # after the session fixtures stopped their servers
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A process a test started must end with it: one that outlived a CI run (a worker that
    ignored SIGTERM) held the test Redis and ate a core. What is left is killed, named with
    its log (whose folder names the test), and the run fails."""
    left = leftovers()
    if not left:
        return
    for pid, _ in left:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    lines = [f"  pid {pid}: app.cli {s.argv} (log {s.log})" for pid, s in left]
    message = "processes the tests started were still running; killed:\n" + "\n".join(lines)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_sep("=", "leftover processes", red=True)
        reporter.write_line(message)
    else:
        print(message, file=sys.stderr)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def migrated_engine(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    with fresh_database(backend, tmp_path_factory.mktemp(f"db-{backend}")) as url:
        engine = make_engine(url)
        yield engine
        engine.dispose()


@pytest.fixture
def db_mode(request: pytest.FixtureRequest) -> str:
    """``rolled_back`` (default): the app works inside the test's one transaction, rolled
    back afterwards. ``committed``: the app opens its own connections and commits, as in
    production, which on Postgres puts ``next`` and ``submit`` on their async hot path
    (app/fastpath); the tables are emptied afterwards. Modules that test those routes run in
    both modes: ``pytestmark = BOTH_DB_MODES``."""
    return str(getattr(request, "param", "rolled_back"))


BOTH_DB_MODES = pytest.mark.parametrize("db_mode", ["rolled_back", "committed"], indirect=True)


@pytest.fixture
def connection(migrated_engine: Engine, db_mode: str) -> Iterator[Connection | None]:
    if db_mode == "committed":
        yield None
        _empty_tables(migrated_engine)
        return
    conn = migrated_engine.connect()
    outer = conn.begin()
    try:
        yield conn
    finally:
        outer.rollback()
        conn.close()


def _empty_tables(engine: Engine) -> None:
    tables = models.Base.metadata.sorted_tables
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            names = ", ".join(f'"{t.name}"' for t in tables)
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in reversed(tables):
                conn.execute(table.delete())


@pytest.fixture
def factory(migrated_engine: Engine, connection: Connection | None) -> sessionmaker[Session]:
    if connection is None:
        return sessionmaker(bind=migrated_engine, expire_on_commit=False)
    # Request commits become savepoint releases inside the test's outer transaction.
    return sessionmaker(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )


@pytest.fixture
def sender() -> RecordingSender:
    return RecordingSender()


@pytest.fixture
def db(factory: sessionmaker[Session], sender: RecordingSender) -> Iterator[Session]:
    """A session for service-level tests (``tests/<domain>/``): it works inside the test's
    one transaction, rolled back at the end (its commits are savepoints), with ``sender``
    recording the tasks sent after a commit."""
    with factory() as session:
        bind_sender(session, sender)
        yield session


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(environment="test", data_dir=tmp_path / "data")


@pytest.fixture
def app_client(
    settings: Settings,
    migrated_engine: Engine,
    factory: sessionmaker[Session],
    connection: Connection | None,
) -> Iterator[TestClient]:
    # Committed mode: the app makes its own sessions (and, on Postgres, its hot path).
    own = None if connection is None else factory
    application = create_app(settings, engine=migrated_engine, session_factory=own)
    with TestClient(application) as client:
        yield client


@dataclass
class Accounts:
    admin: str
    engineer: str
    annotator: str
    outsider: str
    ids: dict[str, int]

    def h(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {getattr(self, who)}"}


@pytest.fixture
def accounts(factory: sessionmaker[Session], settings: Settings) -> Accounts:
    tokens: dict[str, str] = {}
    ids: dict[str, int] = {}
    with factory() as db:
        for name, role in (
            ("admin", Role.admin),
            ("engineer", Role.engineer),
            ("annotator", Role.annotator),
            ("outsider", Role.annotator),
        ):
            person = create_annotator(db, actor=None, name=name, role=role)
            tokens[name], _ = issue_token(db, person, settings.secret_key)
            ids[name] = person.id
        db.commit()
    return Accounts(ids=ids, **tokens)


def row_counts(factory: sessionmaker[Session]) -> dict[str, int]:
    """Rows per table: bad requests must leave these unchanged."""
    with factory() as db:
        return {
            table.name: int(db.scalar(select(func.count()).select_from(table)) or 0)
            for table in models.Base.metadata.sorted_tables
        }
