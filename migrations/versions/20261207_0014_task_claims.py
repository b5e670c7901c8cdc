"""task claims: which task message claimed a cycle or a pretraining run

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07

A run task may take over a cycle left ``training``/``scoring`` (or a run left ``running``) only
when it is the redelivery of the message that claimed it (``worker.pipeline.transitions``).
Rows claimed before this revision have none recorded (NULL), which any message may take over,
as before.

SQLite rebuilds ``cycle`` to add the column, which drops the webhook triggers of 0011; they
are created again after each rebuild (0011's own text, as 0013 does).
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("cycle", "pretraining")


def _recreate_webhook_triggers() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    path = Path(__file__).with_name("20261205_0011_webhooks.py")
    spec = importlib.util.spec_from_file_location("annoloop_migration_0011", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.create_sqlite_triggers()


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch_op:
            batch_op.add_column(sa.Column("claimed_by", sa.String(length=255), nullable=True))
    _recreate_webhook_triggers()


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_column("claimed_by")
    _recreate_webhook_triggers()
