"""annotation (project_id, created_at): /progress counts the last 10 minutes' labels by range

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05

Without it the count read every label of the project (its ``project_id`` index), which at
10^6 labels made the cheap half of /progress cost as much as the rest.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_annotation_project_created", "annotation", ["project_id", "created_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_annotation_project_created", table_name="annotation")
