"""replay after a conflict: a resend that loses the race for its label gets the stored label

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05

Concurrent resends of one idempotency key all looked the key up before the first of them had
committed; the others then found the label (``already_labelled``) or the closed lease
(``not_leased``) and answered 409 instead of the replay (issue 15, item 10). Under READ
COMMITTED each statement of the function sees what has committed before it starts, so the key
is looked up again where those conflicts are raised: by then the winner has committed.
"""

import importlib
from collections.abc import Sequence

from alembic import op

_PREVIOUS = importlib.import_module("migrations.versions.20261205_0004_mixed_queue_confident_stop")

# VOLATILE (the default) on purpose: each call reads what has committed by then.
_REPLAY_FUNCTION = """
CREATE OR REPLACE FUNCTION annoloop_replay(
    p_annotator_id integer, p_key text, p_item_id integer, p_class_index numeric
) RETURNS json LANGUAGE plpgsql AS $$
DECLARE
    a annotation;
BEGIN
    IF p_key IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT * INTO a FROM annotation
    WHERE annotator_id = p_annotator_id AND idempotency_key = p_key;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF a.item_id <> p_item_id OR a.class_index <> p_class_index THEN
        RAISE EXCEPTION 'idempotency_key_reused' USING ERRCODE = 'AL409',
            DETAIL = 'this idempotency key was already used for a different label';
    END IF;
    RETURN json_build_object('replayed', true, 'annotation', row_to_json(a));
END $$;
"""

_REPLAY = (
    "        v_replay := annoloop_replay(c.annotator_id, p_key, p_item_id, p_class_index);\n"
    "        IF v_replay IS NOT NULL THEN\n"
    "            RETURN v_replay;\n"
    "        END IF;\n"
)

# 0004's submit function, each anchor exactly once (an edit of 0002-0004 that moves one fails
# here loudly).
_EDITS = (
    ("    v_last record;\n", "    v_last record;\n    v_replay json;\n"),
    (
        "    IF p_key IS NOT NULL THEN\n"
        "        SELECT * INTO a FROM annotation\n"
        "        WHERE annotator_id = c.annotator_id AND idempotency_key = p_key;\n"
        "        IF FOUND THEN\n"
        "            IF a.item_id <> p_item_id OR a.class_index <> p_class_index THEN\n"
        "                RAISE EXCEPTION 'idempotency_key_reused' USING ERRCODE = 'AL409',\n"
        "                    DETAIL = 'this idempotency key was already used for a different"
        " label';\n"
        "            END IF;\n"
        "            RETURN json_build_object('replayed', true, 'annotation', row_to_json(a));\n"
        "        END IF;\n"
        "    END IF;\n",
        "    IF p_key IS NOT NULL THEN\n" + _REPLAY + "    END IF;\n",
    ),
    (
        "    ) THEN\n        RAISE EXCEPTION 'already_labelled' USING ERRCODE = 'AL409',\n",
        "    ) THEN\n"
        "        -- A concurrent resend of this key committed after the lookup above.\n"
        + _REPLAY
        + "        RAISE EXCEPTION 'already_labelled' USING ERRCODE = 'AL409',\n",
    ),
    (
        "    IF NOT FOUND THEN\n"
        "        SELECT outcome, released_at, expires_at INTO v_last FROM lease\n",
        "    IF NOT FOUND THEN\n"
        "        -- The lease was closed by a concurrent resend of this key (this UPDATE waited\n"
        "        -- for its commit).\n"
        + _REPLAY
        + "        SELECT outcome, released_at, expires_at INTO v_last FROM lease\n",
    ),
)


def submit_function() -> str:
    sql: str = _PREVIOUS.submit_function()
    for anchor, replacement in _EDITS:
        if sql.count(anchor) != 1:
            raise RuntimeError(f"0004's annoloop_submit no longer holds {anchor!r} once")
        sql = sql.replace(anchor, replacement)
    return sql


revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_REPLAY_FUNCTION)
        op.execute(submit_function())


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PREVIOUS.submit_function())
        op.execute("DROP FUNCTION annoloop_replay(integer, text, integer, numeric)")
