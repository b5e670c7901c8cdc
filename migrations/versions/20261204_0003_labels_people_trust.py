"""labels people can trust: cross-fitting folds and the aggregation model per project

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


def downgrade() -> None:
    with op.batch_alter_table("project") as batch_op:
        batch_op.drop_column("aggregation")
        batch_op.drop_column("crossfit_folds")
