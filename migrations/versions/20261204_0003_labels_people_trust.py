"""labels people can trust: cross-fitting folds, aggregation model, gold labels, honeypots

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04

``crossfit_folds``: how many folds the cleaning score's held-out predictions come from
(0 = the model scores the items it trained on, kept for comparison only). ``aggregation``: how
votes become an item's label; votes are never rewritten, so changing it re-derives.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("project") as batch_op:
        batch_op.add_column(
            sa.Column("crossfit_folds", sa.Integer(), nullable=False, server_default="5")
        )
        batch_op.add_column(
            sa.Column("aggregation", sa.String(30), nullable=False, server_default="majority")
        )
        batch_op.add_column(
            sa.Column("honeypot_rate", sa.Double(), nullable=False, server_default="0")
        )
    op.create_table(
        "gold_label",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("class_index", sa.Integer(), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["project.id"], name=op.f("fk_gold_label_project_id_project")
        ),
        sa.ForeignKeyConstraint(["item_id"], ["item.id"], name=op.f("fk_gold_label_item_id_item")),
        sa.ForeignKeyConstraint(
            ["created_by_id"], ["annotator.id"], name=op.f("fk_gold_label_created_by_id_annotator")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gold_label")),
        sa.UniqueConstraint("item_id", name=op.f("uq_gold_label_item_id")),
    )
    with op.batch_alter_table("gold_label") as batch_op:
        batch_op.create_index(batch_op.f("ix_gold_label_project_id"), ["project_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("gold_label") as batch_op:
        batch_op.drop_index(batch_op.f("ix_gold_label_project_id"))
    op.drop_table("gold_label")
    with op.batch_alter_table("project") as batch_op:
        batch_op.drop_column("honeypot_rate")
        batch_op.drop_column("aggregation")
        batch_op.drop_column("crossfit_folds")
