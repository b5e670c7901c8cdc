from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from app.core.config import Settings
from app.core.db import make_engine
from app.main import create_app


def test_healthz_is_ok_when_database_and_broker_answer(app_client: TestClient) -> None:
    r = app_client.get("/healthz")
    assert r.status_code == 200
    # The test's rolled-back session runs every route through the ORM: no hot path.
    assert r.json() == {
        "status": "ok",
        "database": "ok",
        "broker": "ok",
        "blobs": "ok",
        "hot_path": "off",
    }


def test_healthz_is_503_when_the_broker_is_down(tmp_path: Path, migrated_engine: Engine) -> None:
    settings = Settings(environment="test", data_dir=tmp_path, broker_url="redis://127.0.0.1:1/0")
    with TestClient(create_app(settings, engine=migrated_engine)) as client:
        r = client.get("/healthz")
    assert r.status_code == 503
    assert r.json() == {
        "status": "unavailable",
        "database": "ok",
        "broker": "unavailable",
        "blobs": "ok",
        "hot_path": "off" if migrated_engine.dialect.name == "sqlite" else "on",
    }


def test_healthz_is_503_when_the_database_is_down(tmp_path: Path) -> None:
    settings = Settings(
        environment="test",
        data_dir=tmp_path,
        database_url="postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=2",
    )
    engine = make_engine(settings.database_url)
    with TestClient(create_app(settings, engine=engine)) as client:
        r = client.get("/healthz")
    assert r.status_code == 503
    assert r.json()["database"] == "unavailable"
    assert r.json()["hot_path"] == "unchecked"  # the functions could not be read
