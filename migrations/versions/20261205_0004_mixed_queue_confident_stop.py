"""mixed queue and confident stop: ActiveLab entries want one label; entries may stop early

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05

``project.confidence_target``: stop asking for an item once its top class is that probable
(one-coin posterior; ``app.annotations.confidence``). ``queue_entry.stop_lead``: the lead of
the top class over the runner-up that reaches it, written by the worker with the queue. The
submit function gains both rules: an entry of a cleaning cycle with the ``activelab`` strategy
is not kept open until a majority forms (the next ranking decides), and an entry is done once
its item's lead reaches ``stop_lead``.
"""

import importlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# 0003's submit function, with the two rules added (each anchor must occur exactly once, so
# an edit of 0002 or 0003 that moves one fails here loudly).
_PREVIOUS = importlib.import_module("migrations.versions.20261204_0003_labels_people_trust")
_EDITS = (
    ("    v_received integer;\n", "    v_received integer;\n    v_stop_lead integer;\n"),
    (
        "    RETURNING cycle_id, state, labels_wanted, labels_received\n"
        "    INTO v_cycle_id, v_state, v_wanted, v_received;\n",
        "    RETURNING cycle_id, state, labels_wanted, labels_received, stop_lead\n"
        "    INTO v_cycle_id, v_state, v_wanted, v_received, v_stop_lead;\n",
    ),
    (
        "    IF p.kind = 'clean' THEN\n",
        "    -- ActiveLab's mixed queue asks for one label an entry (``queue.settle``); the\n"
        "    -- cycle's strategy decides, as a cycle may be started with another than the\n"
        "    -- project's.\n"
        "    IF p.kind = 'clean'\n"
        "       AND (SELECT strategy FROM cycle WHERE id = v_cycle_id) <> 'activelab' THEN\n",
    ),
    (
        "    ELSIF p.stop_when_decided AND NOT v_done THEN\n"
        "        -- ``stop_if_decided``: no label this entry still wants can change the"
        " majority.\n",
        "    ELSIF (p.stop_when_decided OR v_stop_lead IS NOT NULL) AND NOT v_done THEN\n"
        "        -- ``stop_if_decided``: no label this entry still wants can change the majority,\n"
        "        -- or the lead has reached ``stop_lead`` (a NULL stop_lead never does).\n",
    ),
    (
        "        IF v_counts[1] - coalesce(v_counts[2], 0) > v_wanted - v_received THEN\n",
        "        IF (p.stop_when_decided\n"
        "            AND v_counts[1] - coalesce(v_counts[2], 0) > v_wanted - v_received)\n"
        "           OR v_counts[1] - coalesce(v_counts[2], 0) >= v_stop_lead THEN\n",
    ),
)


def submit_function() -> str:
    sql: str = _PREVIOUS._submit_with_stop_rule()
    for anchor, replacement in _EDITS:
        if sql.count(anchor) != 1:
            raise RuntimeError(f"0003's annoloop_submit no longer holds {anchor!r} once")
        sql = sql.replace(anchor, replacement)
    return sql


revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("project") as batch_op:
        batch_op.add_column(sa.Column("confidence_target", sa.Double(), nullable=True))
    with op.batch_alter_table("queue_entry") as batch_op:
        batch_op.add_column(sa.Column("stop_lead", sa.Integer(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(submit_function())


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PREVIOUS._submit_with_stop_rule())
    with op.batch_alter_table("queue_entry") as batch_op:
        batch_op.drop_column("stop_lead")
    with op.batch_alter_table("project") as batch_op:
        batch_op.drop_column("confidence_target")
