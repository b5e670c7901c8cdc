"""Shared fixtures: migrated databases per backend, an API client whose every test runs in
a transaction that is rolled back, and accounts with tokens."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

import app.db_models as models
from app.auth.service import create_annotator, issue_token
from app.core.config import Settings
from app.core.db import make_engine
from app.core.enums import Role
from app.main import create_app
from tests.backends import BACKENDS, fresh_database


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
def connection(migrated_engine: Engine) -> Iterator[Connection]:
    conn = migrated_engine.connect()
    outer = conn.begin()
    try:
        yield conn
    finally:
        outer.rollback()
        conn.close()


@pytest.fixture
def factory(connection: Connection) -> sessionmaker[Session]:
    # Request commits become savepoint releases inside the test's outer transaction.
    return sessionmaker(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(environment="test", data_dir=tmp_path / "data")


@pytest.fixture
def app_client(
    settings: Settings, migrated_engine: Engine, factory: sessionmaker[Session]
) -> Iterator[TestClient]:
    application = create_app(settings, engine=migrated_engine, session_factory=factory)
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
