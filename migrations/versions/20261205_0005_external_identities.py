"""external identities: the annotators imported labels name never sign in

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05

``annotator.external``: an identity that imported labels name (a crowd worker). It holds no
token and cannot be made a member, and an import can no longer name an account that signs in.
Existing importers (annotators with imported labels and no token) become external.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("annotator") as batch_op:
        batch_op.add_column(
            sa.Column("external", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.execute(
        """
        UPDATE annotator SET external = true
        WHERE role = 'annotator'
          AND NOT EXISTS (SELECT 1 FROM api_token t WHERE t.annotator_id = annotator.id)
          AND EXISTS (
              SELECT 1 FROM annotation a
              WHERE a.annotator_id = annotator.id AND a.source = 'import')
        """
    )


def downgrade() -> None:
    with op.batch_alter_table("annotator") as batch_op:
        batch_op.drop_column("external")
