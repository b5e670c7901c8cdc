"""The hot path's database functions: their source files, installing them, checking them.

``app/fastpath/sql/*.sql`` are the truth (migrations 0002–0007 only record how they came
about). ``annoloop migrate`` runs each file (``CREATE OR REPLACE``) after ``alembic upgrade``
and stamps the function with a fingerprint in its comment: the sha256 of its source file and
the md5 of ``pg_get_functiondef`` as Postgres stored it. The API reads the functions back at
start-up (``problems``): any function missing, built from other source, changed since, or not
ours means the functions are not the code's rules, and the API serves through the ORM.

The fingerprint lives in the comment because ``pg_get_functiondef`` is Postgres's own
rendering (its schema, its spelling of types and settings): only the server that stored a
function can say what the rendering of our source is, so it is recorded when it is stored.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from sqlalchemy import Connection, text

SQL_DIR = Path(__file__).resolve().parent / "sql"


@dataclass(frozen=True)
class Function:
    file: str
    # As Postgres spells ``oid::regprocedure``: DROP and COMMENT name it so, and the check
    # compares it with what the server lists.
    signature: str

    @property
    def name(self) -> str:
        return self.signature.split("(", 1)[0]


# In the order they are created: callers after what they call.
FUNCTIONS = (
    Function("caller.sql", "annoloop_caller(text,timestamp with time zone)"),
    Function("visible_project.sql", "annoloop_visible_project(integer,integer,boolean)"),
    Function(
        "leased.sql",
        "annoloop_leased(integer,integer,timestamp with time zone,timestamp with time zone,"
        "integer,item)",
    ),
    Function("replay.sql", "annoloop_replay(integer,text,integer,numeric)"),
    Function(
        "next.sql",
        "annoloop_next(text,integer,timestamp with time zone,integer,integer)",
    ),
    Function(
        "submit.sql",
        "annoloop_submit(text,integer,numeric,text,timestamp with time zone)",
    ),
)

# Every function of ours that an unqualified call would find (the search path decides).
# Trigger functions are not the hot path's: the migration that creates a trigger owns its
# function (the webhook outbox's, migration 0011), and dropping one would break its trigger.
LISTED = """
    SELECT p.oid::regprocedure::text AS signature,
           md5(pg_get_functiondef(p.oid)) AS definition_md5,
           obj_description(p.oid, 'pg_proc') AS fingerprint
    FROM pg_proc p
    WHERE left(p.proname, 9) = 'annoloop_' AND pg_function_is_visible(p.oid)
      AND p.prorettype <> 'trigger'::regtype
"""
_FINGERPRINT = re.compile(r"annoloop source sha256:([0-9a-f]{64}) definition md5:([0-9a-f]{32})")


def source(function: Function) -> str:
    return (SQL_DIR / function.file).read_text(encoding="utf-8")


@cache
def source_sha256(function: Function) -> str:
    return hashlib.sha256(source(function).encode()).hexdigest()


def fingerprint(function: Function, definition_md5: str) -> str:
    return f"annoloop source sha256:{source_sha256(function)} definition md5:{definition_md5}"


def problems(listed: list[tuple[str, str, str | None]]) -> list[str]:
    """What differs between the functions the database lists (``LISTED``: signature,
    definition md5, fingerprint) and the source files; empty when they are the same."""
    found = {signature: (md5, note) for signature, md5, note in listed}
    out = []
    for function in FUNCTIONS:
        if function.signature not in found:
            out.append(f"{function.signature} is missing")
            continue
        md5, note = found.pop(function.signature)
        stamp = _FINGERPRINT.fullmatch(note or "")
        if stamp is None or stamp.group(1) != source_sha256(function):
            out.append(f"{function.signature} was not installed from {function.file}")
        elif stamp.group(2) != md5:
            out.append(f"{function.signature} was changed after it was installed")
    out.extend(f"{signature} is not in app/fastpath/sql" for signature in sorted(found))
    return out


def install(conn: Connection) -> None:
    """Create or replace every function from its file, stamp it, and drop functions of ours
    that no file defines (an unqualified call could otherwise find them). Postgres only; the
    caller commits."""
    expected = {f.signature for f in FUNCTIONS}
    for signature, _, _ in conn.execute(text(LISTED)).all():
        if signature not in expected:
            conn.execute(text(f"DROP FUNCTION {signature}"))
    for function in FUNCTIONS:
        # As alembic's op.execute runs it: a text() with no parameters (``:=`` and ``::``
        # are not taken for bind names).
        conn.execute(text(source(function)))
        md5 = conn.execute(
            text("SELECT md5(pg_get_functiondef(CAST(:sig AS regprocedure)))"),
            {"sig": function.signature},
        ).scalar_one()
        # COMMENT takes a literal, not a parameter; the note is hex digits and words.
        note = fingerprint(function, md5)
        conn.execute(text(f"COMMENT ON FUNCTION {function.signature} IS '{note}'"))
