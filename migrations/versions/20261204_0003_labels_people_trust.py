"""labels people can trust: cross-fitting folds, aggregation model, gold labels, honeypots

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04

``crossfit_folds``: how many folds the cleaning score's held-out predictions come from
(0 = the model scores the items it trained on, kept for comparison only). ``aggregation``: how
votes become an item's label; votes are never rewritten, so changing it re-derives.
"""

import importlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# 0002's submit function, with the rule added where the cleaning rule is (each anchor must
# occur exactly once, so an edit of 0002 that moves them fails here loudly).
_HOT = importlib.import_module("migrations.versions.20261202_0002_hot_path")
_EDITS = (
    ("    v_state text;\n", "    v_state text;\n    v_wanted integer;\n    v_received integer;\n"),
    (
        "    RETURNING cycle_id, state INTO v_cycle_id, v_state;\n",
        "    RETURNING cycle_id, state, labels_wanted, labels_received\n"
        "    INTO v_cycle_id, v_state, v_wanted, v_received;\n",
    ),
    (
        "            v_done := false;\n        END IF;\n    END IF;\n",
        """            v_done := false;
        END IF;
    ELSIF p.stop_when_decided AND NOT v_done THEN
        -- ``stop_if_decided``: no label this entry still wants can change the majority.
        SELECT array_agg(n ORDER BY n DESC) INTO v_counts FROM (
            SELECT count(*) AS n FROM annotation
            WHERE item_id = p_item_id AND retracted_at IS NULL GROUP BY class_index
        ) votes;
        IF v_counts[1] - coalesce(v_counts[2], 0) > v_wanted - v_received THEN
            UPDATE queue_entry SET labels_wanted = labels_received, state = 'done'
            WHERE id = v_entry_id;
            v_done := true;
        END IF;
    END IF;
""",
    ),
)


def _submit_with_stop_rule() -> str:
    sql: str = _HOT.SUBMIT
    for anchor, replacement in _EDITS:
        if sql.count(anchor) != 1:
            raise RuntimeError(f"0002's annoloop_submit no longer holds {anchor!r} once")
        sql = sql.replace(anchor, replacement)
    return sql


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
        batch_op.add_column(
            sa.Column("stop_when_decided", sa.Boolean(), nullable=False, server_default=sa.true())
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

    if op.get_bind().dialect.name == "postgresql":
        op.execute(_submit_with_stop_rule())


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_HOT.SUBMIT)
    with op.batch_alter_table("gold_label") as batch_op:
        batch_op.drop_index(batch_op.f("ix_gold_label_project_id"))
    op.drop_table("gold_label")
    with op.batch_alter_table("project") as batch_op:
        batch_op.drop_column("stop_when_decided")
        batch_op.drop_column("honeypot_rate")
        batch_op.drop_column("aggregation")
        batch_op.drop_column("crossfit_folds")
