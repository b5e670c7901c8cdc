"""The API serves through the database functions only when they are the ones in
app/fastpath/sql: a function missing, edited, left by older code or not ours sends ``next``
and submit through the ORM, says so (log, /healthz, /metrics), and `annoloop migrate`
installs them again."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text
from sqlalchemy.orm import sessionmaker

from app.auth.service import create_annotator, issue_token
from app.cli import migrate
from app.core.config import Settings
from app.core.db import make_engine
from app.core.enums import Role
from app.fastpath import functions
from app.main import create_app
from tests.api.helpers import create_project, open_batch, upload_png
from tests.backends import fresh_postgres
from tests.conftest import Accounts

pytestmark = pytest.mark.postgres

_SUBMIT_0004 = importlib.import_module(
    "migrations.versions.20261205_0004_mixed_queue_confident_stop"
).submit_function()

TAMPERING = {
    "missing": ("DROP FUNCTION annoloop_replay(integer,text,integer,numeric)", "is missing"),
    # What an older release leaves: its submit, without the replay after a lost race.
    "older": (_SUBMIT_0004, "was changed after it was installed"),
    "edited": (
        "ALTER FUNCTION annoloop_next(text,integer,timestamptz,integer,integer) "
        "SET enable_seqscan = on",
        "was changed after it was installed",
    ),
    "unstamped": (
        "COMMENT ON FUNCTION annoloop_caller(text,timestamptz) IS NULL",
        "was not installed from caller.sql",
    ),
    "extra": (
        "CREATE FUNCTION annoloop_submit(p integer) RETURNS integer LANGUAGE sql AS 'SELECT p'",
        "annoloop_submit(integer) is not in app/fastpath/sql",
    ),
}


@pytest.fixture
def engine() -> Iterator[Engine]:
    with fresh_postgres() as url:
        engine = make_engine(url)
        yield engine
        engine.dispose()


def _admin(engine: Engine, settings: Settings) -> Accounts:
    with sessionmaker(bind=engine)() as db:
        person = create_annotator(db, actor=None, name="admin", role=Role.admin)
        token, _ = issue_token(db, person, settings.secret_key)
        db.commit()
        person_id = person.id
    who = {"admin": token, "engineer": token, "annotator": token, "outsider": token}
    return Accounts(ids=dict.fromkeys(who, person_id), **who)


def _label_one(client: TestClient, accounts: Accounts, engine: Engine, seed: int) -> None:
    """``next`` then a label, both answered as on any path."""
    pid = create_project(client, accounts, who="admin", name=f"p{seed}")["id"]
    item = upload_png(client, accounts, pid, seed=seed)["id"]
    open_batch(sessionmaker(bind=engine), pid, [item])
    r = client.get(f"/api/v1/projects/{pid}/next", headers=accounts.h("admin"))
    assert r.status_code == 200, r.text
    assert r.json()["item"]["id"] == item
    body = {"class_index": 1, "idempotency_key": f"key-{seed:04d}"}
    r = client.post(f"/api/v1/items/{item}/annotations", json=body, headers=accounts.h("admin"))
    assert r.status_code == 201, r.text
    r = client.post(f"/api/v1/items/{item}/annotations", json=body, headers=accounts.h("admin"))
    assert r.status_code == 200, r.text  # the replay


@pytest.mark.parametrize("how", sorted(TAMPERING))
def test_functions_that_differ_send_the_routes_through_the_orm_until_migrate(
    how: str, engine: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(environment="test", data_dir=tmp_path / "data")
    accounts = _admin(engine, settings)
    with TestClient(create_app(settings, engine=engine)) as client:
        assert client.get("/healthz").json()["hot_path"] == "on"
        assert 'annoloop_hot_path{annoloop_hot_path="on"} 1.0' in client.get("/metrics").text

    sql, problem = TAMPERING[how]
    with engine.begin() as conn:
        conn.execute(text(sql))
    with (
        caplog.at_level(logging.ERROR, logger="app.fastpath.check"),
        TestClient(create_app(settings, engine=engine)) as client,
    ):
        health = client.get("/healthz")
        assert (health.status_code, health.json()["hot_path"]) == (200, "fallback")
        metrics = client.get("/metrics").text
        assert 'annoloop_hot_path{annoloop_hot_path="fallback"} 1.0' in metrics
        _label_one(client, accounts, engine, seed=1)  # 500 on the functions when one is missing
    problems = client.app.state.hot_path.functions.problems  # type: ignore[attr-defined]
    assert len(problems) == 1, problems
    assert problem in problems[0]
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(problems[0] in line and "annoloop migrate" in line for line in logged), logged

    migrate(engine.url.render_as_string(hide_password=False))
    with TestClient(create_app(settings, engine=engine)) as client:
        assert client.get("/healthz").json()["hot_path"] == "on"
        _label_one(client, accounts, engine, seed=2)


def test_migrate_stamps_every_function_and_the_check_reads_them_back(engine: Engine) -> None:
    with engine.connect() as conn:
        listed = [tuple(row) for row in conn.execute(text(functions.LISTED))]
    assert sorted(sig for sig, _, _ in listed) == sorted(f.signature for f in functions.FUNCTIONS)
    assert functions.problems(listed) == []  # type: ignore[arg-type]
