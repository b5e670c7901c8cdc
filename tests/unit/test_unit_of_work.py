"""The one unit of work (``app.core.db.transaction``): what a block does is committed when it
succeeds and rolled back when it raises; the session is closed either way."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from app.core.db import make_engine, make_session_factory, transaction, unit_of_work


def _insert_then_fail(factory: sessionmaker[Session]) -> None:
    with unit_of_work(factory) as db:
        db.execute(text("INSERT INTO t VALUES (2)"))
        raise RuntimeError("the block failed")


def test_commit_on_success_rollback_on_error(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'uow.sqlite'}")
    factory = make_session_factory(engine)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
    with unit_of_work(factory) as db:
        db.execute(text("INSERT INTO t VALUES (1)"))
    with pytest.raises(RuntimeError, match="the block failed"):
        _insert_then_fail(factory)
    session = factory()
    with transaction(session) as same:
        assert same is session
        same.execute(text("INSERT INTO t VALUES (3)"))
    assert not session.in_transaction()  # closed: it holds no connection
    with engine.connect() as conn:
        assert conn.execute(text("SELECT x FROM t ORDER BY x")).scalars().all() == [1, 3]
    engine.dispose()
