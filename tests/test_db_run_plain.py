"""``run_plain``: prebuilt statements on the session's connection, in its transaction."""

from __future__ import annotations

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session, sessionmaker

from app.auth.models import Annotator
from app.core.db import run_plain
from app.core.enums import Role

_COUNT_NAMED = select(func.count(Annotator.id)).where(Annotator.name == bindparam("name"))


def test_sees_pending_objects_and_shares_the_transaction(
    factory: sessionmaker[Session],
) -> None:
    db = factory()
    try:
        db.add(Annotator(name="pending-one", role=Role.annotator))
        # Flushed first, as the ORM's autoflush would: the row is visible to the statement.
        assert run_plain(db, _COUNT_NAMED, {"name": "pending-one"}).scalar() == 1
        db.rollback()
        # Same transaction as the session: its rollback takes the row away again.
        assert run_plain(db, _COUNT_NAMED, {"name": "pending-one"}).scalar() == 0
    finally:
        db.close()
