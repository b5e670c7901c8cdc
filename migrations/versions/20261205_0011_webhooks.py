"""webhooks: subscriptions, and an outbox the database fills in the changing transaction

Revision ID: 0011
Revises: 0007
Create Date: 2026-12-05

``webhook`` holds per-project subscriptions; ``webhook_delivery`` one row per event per
subscription, which the API's delivery sweep sends and logs (app/webhooks/delivery.py).

Triggers write the deliveries, so an event is stored by the same transaction as the change
it reports, whichever code made it (the worker's compare-and-sets, the API's services, the
Postgres hot path's functions), and no caller can forget it:

* ``cycle.state_changed``: a cycle row inserted (``from`` null) or its ``state`` changed;
* ``batch.labelled``: a cycle goes ``labeling`` -> ``completed`` with no open queue entry
  left (a cycle closed because a newer one opened still has open entries at that moment);
* ``budget.spent``: ``project.labels_spent`` reaches the budget it counts against
  (``relabel_budget`` for cleaning projects, else ``label_budget``).

Only subscriptions that ask for the event get a row: a project without webhooks writes
nothing. SQLite rebuilds a table in ``batch_alter_table`` and drops its triggers then: a later
migration that alters ``cycle`` or ``project`` on SQLite must create them again
(``create_sqlite_triggers``); tests/webhooks/test_outbox.py checks they exist at head.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TRIGGERS = ("cycle_inserted", "cycle_state_changed", "budget_spent")

# --------------------------------------------------------------------------- SQLite
# The same text format SQLAlchemy writes datetimes in on SQLite, so they compare as strings.
_SQLITE_NOW = "strftime('%Y-%m-%d %H:%M:%f', 'now') || '000'"


def _sqlite_insert(event: str, payload: str, project_id: str, when: str = "1") -> str:
    return f"""
    INSERT INTO webhook_delivery (webhook_id, event, payload, created_at, state, attempts,
                                  next_attempt_at)
    SELECT w.id, '{event}', {payload}, {_SQLITE_NOW}, 'pending', 0, {_SQLITE_NOW}
    FROM webhook w
    WHERE w.project_id = {project_id} AND w.active AND w.events LIKE '%,{event},%'
      AND {when};
    """


_SQLITE_CYCLE = (
    "json_object('project_id', NEW.project_id, 'cycle_id', NEW.id, 'number', NEW.number, "
    "'from', {old}, 'to', NEW.state)"
)
_SQLITE_BATCH = (
    "json_object('project_id', NEW.project_id, 'cycle_id', NEW.id, 'number', NEW.number, "
    "'batch_size', NEW.batch_size)"
)
_SQLITE_BUDGET = (
    "json_object('project_id', NEW.id, 'kind', NEW.kind, 'labels_spent', NEW.labels_spent, "
    "'budget', CASE WHEN NEW.kind = 'clean' THEN NEW.relabel_budget ELSE NEW.label_budget END)"
)
_BUDGET = "(CASE WHEN NEW.kind = 'clean' THEN NEW.relabel_budget ELSE NEW.label_budget END)"

_NO_OPEN_ENTRY = (
    "NOT EXISTS (SELECT 1 FROM queue_entry q WHERE q.cycle_id = NEW.id AND q.state = 'open')"
)
_CREATED = _sqlite_insert("cycle.state_changed", _SQLITE_CYCLE.format(old="NULL"), "NEW.project_id")
_CHANGED = _sqlite_insert(
    "cycle.state_changed", _SQLITE_CYCLE.format(old="OLD.state"), "NEW.project_id"
)
_BATCH = _sqlite_insert(
    "batch.labelled",
    _SQLITE_BATCH,
    "NEW.project_id",
    when=f"OLD.state = 'labeling' AND NEW.state = 'completed' AND {_NO_OPEN_ENTRY}",
)

SQLITE = {
    "cycle_inserted": f"""
        CREATE TRIGGER webhook_cycle_inserted AFTER INSERT ON cycle
        BEGIN {_CREATED}
        END""",
    # One trigger, two statements: SQLite runs triggers on one event in no stated order.
    "cycle_state_changed": f"""
        CREATE TRIGGER webhook_cycle_state_changed AFTER UPDATE OF state ON cycle
        WHEN OLD.state IS NOT NEW.state
        BEGIN {_CHANGED}
        {_BATCH}
        END""",
    "budget_spent": f"""
        CREATE TRIGGER webhook_budget_spent AFTER UPDATE OF labels_spent ON project
        WHEN {_BUDGET} IS NOT NULL AND OLD.labels_spent < {_BUDGET}
          AND NEW.labels_spent >= {_BUDGET}
        BEGIN {_sqlite_insert("budget.spent", _SQLITE_BUDGET, "NEW.id")}
        END""",
}


def create_sqlite_triggers() -> None:
    for name in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS webhook_{name}")
        op.execute(SQLITE[name])


# --------------------------------------------------------------------------- Postgres


def _pg_insert(event: str, payload: str, project_id: str) -> str:
    return f"""
    INSERT INTO webhook_delivery (webhook_id, event, payload, created_at, state, attempts,
                                  next_attempt_at)
    SELECT w.id, '{event}', ({payload})::text, now(), 'pending', 0, now()
    FROM webhook w
    WHERE w.project_id = {project_id} AND w.active AND w.events LIKE '%,{event},%';
    """


_PG_CYCLE = (
    "json_build_object('project_id', NEW.project_id, 'cycle_id', NEW.id, 'number', NEW.number, "
    "'from', {old}, 'to', NEW.state)"
)
_PG_BATCH = (
    "json_build_object('project_id', NEW.project_id, 'cycle_id', NEW.id, 'number', NEW.number, "
    "'batch_size', NEW.batch_size)"
)
_PG_BUDGET = (
    "json_build_object('project_id', NEW.id, 'kind', NEW.kind, 'labels_spent', "
    f"NEW.labels_spent, 'budget', {_BUDGET})"
)

POSTGRES_FUNCTIONS = f"""
CREATE OR REPLACE FUNCTION annoloop_webhook_cycle() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        {_pg_insert("cycle.state_changed", _PG_CYCLE.format(old="NULL::text"), "NEW.project_id")}
    ELSIF OLD.state IS DISTINCT FROM NEW.state THEN
        {_pg_insert("cycle.state_changed", _PG_CYCLE.format(old="OLD.state"), "NEW.project_id")}
        IF OLD.state = 'labeling' AND NEW.state = 'completed' AND {_NO_OPEN_ENTRY} THEN
            {_pg_insert("batch.labelled", _PG_BATCH, "NEW.project_id")}
        END IF;
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION annoloop_webhook_budget() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF {_BUDGET} IS NOT NULL AND OLD.labels_spent < {_BUDGET}
       AND NEW.labels_spent >= {_BUDGET} THEN
        {_pg_insert("budget.spent", _PG_BUDGET, "NEW.id")}
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER webhook_cycle AFTER INSERT OR UPDATE OF state ON cycle
    FOR EACH ROW EXECUTE FUNCTION annoloop_webhook_cycle();
CREATE TRIGGER webhook_budget_spent AFTER UPDATE OF labels_spent ON project
    FOR EACH ROW EXECUTE FUNCTION annoloop_webhook_budget();
"""


def upgrade() -> None:
    op.create_table(
        "webhook",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("secret", sa.String(length=128), nullable=False),
        sa.Column("events", sa.String(length=200), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["project.id"],
            name=op.f("fk_webhook_project_id_project"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["created_by_id"], ["annotator.id"], name=op.f("fk_webhook_created_by_id_annotator")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook")),
    )
    op.create_table(
        "webhook_delivery",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("webhook_id", sa.Integer(), nullable=False),
        sa.Column("event", sa.String(length=40), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["webhook_id"],
            ["webhook.id"],
            name=op.f("fk_webhook_delivery_webhook_id_webhook"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_delivery")),
    )
    op.create_index(
        "ix_webhook_delivery_due", "webhook_delivery", ["state", "next_attempt_at"], unique=False
    )
    op.create_index(
        op.f("ix_webhook_delivery_webhook_id"), "webhook_delivery", ["webhook_id"], unique=False
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(POSTGRES_FUNCTIONS)
    else:
        create_sqlite_triggers()


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS webhook_cycle ON cycle")
        op.execute("DROP TRIGGER IF EXISTS webhook_budget_spent ON project")
        op.execute("DROP FUNCTION IF EXISTS annoloop_webhook_cycle()")
        op.execute("DROP FUNCTION IF EXISTS annoloop_webhook_budget()")
    else:
        for name in TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS webhook_{name}")
    op.drop_index(op.f("ix_webhook_delivery_webhook_id"), table_name="webhook_delivery")
    op.drop_index("ix_webhook_delivery_due", table_name="webhook_delivery")
    op.drop_table("webhook_delivery")
    op.drop_table("webhook")
