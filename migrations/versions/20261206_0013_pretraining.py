"""pretraining: self-supervised runs on a project's pool (issue 19, item 3)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06

A SimCLR run trains a project's model body on its unlabelled pool; its per-epoch checkpoint
(a resumable state in the blob store) is what a cycle with ``hparams.init = "pretraining"``
starts ``features`` from, and the cycle records which run and checkpoint that was.

SQLite rebuilds ``cycle`` to add its columns, which drops the webhook triggers of 0011; they
are created again after each rebuild (0011's own text, so the triggers stay what it made).
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATUSES = ("queued", "running", "done", "failed", "cancelled")


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
    op.create_table(
        "pretraining",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                *STATUSES,
                name="pretraining_status",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("epochs_done", sa.Integer(), nullable=False),
        sa.Column("losses", sa.JSON(), nullable=False),
        sa.Column("checkpoint_sha256", sa.String(length=64), nullable=True),
        sa.Column("items", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["project_id"], ["project.id"], name=op.f("fk_pretraining_project_id_project")
        ),
        sa.ForeignKeyConstraint(
            ["created_by_id"],
            ["annotator.id"],
            name=op.f("fk_pretraining_created_by_id_annotator"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pretraining")),
    )
    with op.batch_alter_table("pretraining") as batch_op:
        batch_op.create_index(op.f("ix_pretraining_project_id"), ["project_id"], unique=False)
    with op.batch_alter_table("cycle") as batch_op:
        batch_op.add_column(sa.Column("pretraining_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("pretraining_sha256", sa.String(length=64), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_cycle_pretraining_id_pretraining"),
            "pretraining",
            ["pretraining_id"],
            ["id"],
        )
    _recreate_webhook_triggers()


def downgrade() -> None:
    with op.batch_alter_table("cycle") as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_cycle_pretraining_id_pretraining"), type_="foreignkey"
        )
        batch_op.drop_column("pretraining_sha256")
        batch_op.drop_column("pretraining_id")
    _recreate_webhook_triggers()
    with op.batch_alter_table("pretraining") as batch_op:
        batch_op.drop_index(op.f("ix_pretraining_project_id"))
    op.drop_table("pretraining")
