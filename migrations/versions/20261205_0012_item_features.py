"""item_feature: named feature vectors beside an item's image (issue 19, item 1)

Revision ID: 0012
Revises: 0007
Create Date: 2026-12-05

An item was either an image (for people) or a feature vector (for the model). A project on good
embeddings now keeps the image as the item's payload and gives its model a named vector
(``model_spec.input``), uploaded with the items or later by external id.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "item_feature",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("blob_sha256", sa.String(length=64), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["project.id"], name=op.f("fk_item_feature_project_id_project")
        ),
        sa.ForeignKeyConstraint(
            ["item_id"], ["item.id"], name=op.f("fk_item_feature_item_id_item")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_item_feature")),
        sa.UniqueConstraint("item_id", "name", name=op.f("uq_item_feature_item_id_name")),
    )
    with op.batch_alter_table("item_feature") as batch_op:
        batch_op.create_index("ix_item_feature_project_name", ["project_id", "name"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("item_feature") as batch_op:
        batch_op.drop_index("ix_item_feature_project_name")
    op.drop_table("item_feature")
