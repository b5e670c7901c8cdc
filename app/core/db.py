"""Engine, sessions and the unit of work.

Sessions commit only at a boundary: the request dependency (``app.deps.get_db``) or
``unit_of_work`` in worker tasks. Services and repositories never commit.

SQLite runs every transaction as ``BEGIN IMMEDIATE``: a deferred transaction that reads and
then writes can fail at once with "database is locked" when another writer got in between,
whereas an immediate one waits on the busy timeout. That serialises writers, which is what
the embedded setup wants (queue leases must not race).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    CursorResult,
    DateTime,
    Engine,
    Executable,
    MetaData,
    create_engine,
    event,
)
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[Any]: JSON}


def utcnow() -> datetime:
    return datetime.now(UTC)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Autocommit at the driver level so that SQLAlchemy's begin hook decides how transactions open.
    dbapi_connection.isolation_level = None
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


# Execution option of a connection that only reads: its SQLite transaction is deferred, so a
# long read (``/progress`` statistics in the background) never holds the write lock.
READ_ONLY = "annoloop_read_only"


def _sqlite_begin(conn: Any) -> None:
    conn.exec_driver_sql(
        "BEGIN" if conn.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE"
    )


def make_engine(url: str, **kwargs: Any) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    # Connections past pool_size are closed on return: the pool must cover the requests in
    # flight (at most 4 per API process, app/core/inflight.py) or a Postgres backend is
    # opened and closed on most requests under load.
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    return create_engine(url, **kwargs)


def serialises_writers(db: Session) -> bool:
    """Whether every transaction holds the database's one write lock (SQLite here)."""
    return db.get_bind().dialect.name == "sqlite"


def run_plain(db: Session, statement: Executable, params: dict[str, Any]) -> CursorResult[Any]:
    """Run a prebuilt statement that returns plain columns (no ORM objects) on the session's
    connection, in the session's transaction.

    ``Session.execute`` wraps each statement in ORM work (compile-state setup, result
    adaptation, synchronising loaded objects): on the annotator's routes, a dozen statements
    per label, it cost as much CPU as the rest of the statement, SQLite included (profiled
    with cProfile). Pending ORM changes are flushed first, as autoflush would; objects
    already loaded are not updated by what the statement writes, so callers pass statements
    whose rows they do not also hold as objects, or refresh them (``set_committed_value``).
    """
    db.flush()
    return db.connection().execute(statement, params)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False, autoflush=True)


@contextmanager
def transaction(session: Session) -> Iterator[Session]:
    """The unit of work on ``session``: committed when the block succeeds, rolled back when
    the block or the commit raises, closed either way. The one place a boundary (a worker
    task, a request, a command) commits; services and repositories never do."""
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def unit_of_work(factory: sessionmaker[Session]) -> AbstractContextManager[Session]:
    """``transaction`` on a new session from ``factory``."""
    return transaction(factory())
