"""hot path: the annotator's next and submit as one statement each (Postgres), and indexes

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02

The rules are those of ``app.queue.service.next_item`` and ``app.annotations.service.submit``
(the ORM path, which SQLite runs); ``app/fastpath`` calls these functions, one round trip
per request in autocommit, so a request's row locks (the project row every label updates)
are held for the server-side work only, never across a trip to the API process. A refusal
raises SQLSTATE ``AL<status>`` with the error code as message and the text as detail: the
statement, and with it everything the call did, is rolled back.

Every statement in them is meant to be an index lookup, and they run with
``enable_seqscan = off``: with the statistics of an empty table (a new install, before
autovacuum's next analyse) the planner chose, and the functions cached, sequential scans of
``annotation``, ``lease`` and ``queue_entry`` — one per label, each longer than the last
(a 60-s benchmark sank from 277 to 106 labels/s; ``pg_stat_user_tables`` showed 92 M rows
read by 23 k scans of ``annotation``).

Indexes (both databases): live leases get a partial index by project and annotator; two
indexes that the leading columns of unique constraints already provide are dropped (each
index is written on every label). Postgres: queue entries leave room on their pages
(fillfactor 70), so counting a lease on an entry is a HOT update that writes no index.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CALLER = r"""
CREATE OR REPLACE FUNCTION annoloop_caller(
    p_token_hash text, p_now timestamptz, OUT annotator_id integer, OUT is_admin boolean
) LANGUAGE plpgsql STABLE SET enable_seqscan = off AS $$
DECLARE
    r record;
BEGIN
    SELECT a.id, a.role, a.active, t.revoked_at, t.expires_at INTO r
    FROM api_token t JOIN annotator a ON a.id = t.annotator_id
    WHERE t.token_hash = p_token_hash;
    IF NOT FOUND OR r.revoked_at IS NOT NULL THEN
        RAISE EXCEPTION 'unauthorized' USING ERRCODE = 'AL401', DETAIL = 'unknown or revoked token';
    ELSIF r.expires_at IS NOT NULL AND r.expires_at <= p_now THEN
        RAISE EXCEPTION 'unauthorized' USING ERRCODE = 'AL401', DETAIL = 'token expired';
    ELSIF NOT r.active THEN
        RAISE EXCEPTION 'unauthorized' USING ERRCODE = 'AL401', DETAIL = 'account disabled';
    END IF;
    annotator_id := r.id;
    is_admin := r.role = 'admin';
END $$;
"""

# A project the caller may see (admins every one, others their memberships), else 404: a
# project someone cannot see looks the same as one that does not exist.
VISIBLE_PROJECT = r"""
CREATE OR REPLACE FUNCTION annoloop_visible_project(
    p_project_id integer, p_annotator_id integer, p_is_admin boolean
) RETURNS project LANGUAGE plpgsql STABLE SET enable_seqscan = off AS $$
DECLARE
    p project;
BEGIN
    SELECT * INTO p FROM project pr
    WHERE pr.id = p_project_id AND (p_is_admin OR EXISTS (
        SELECT 1 FROM project_member m
        WHERE m.project_id = pr.id AND m.annotator_id = p_annotator_id));
    IF NOT FOUND THEN
        RAISE EXCEPTION 'not_found' USING ERRCODE = 'AL404',
            DETAIL = format('project %s not found', p_project_id);
    END IF;
    RETURN p;
END $$;
"""

# What ``next`` shows of a lease: the shape of ``app.queue.schemas.NextOut`` (leased).
LEASED = r"""
CREATE OR REPLACE FUNCTION annoloop_leased(
    p_lease_id integer, p_entry_id integer, p_created timestamptz, p_expires timestamptz,
    p_cycle_id integer, i item
) RETURNS json LANGUAGE sql IMMUTABLE AS $$
    SELECT json_build_object(
        'status', 'leased',
        'lease', json_build_object(
            'id', p_lease_id, 'item_id', i.id, 'queue_entry_id', p_entry_id,
            'expires_at', p_expires, 'created_at', p_created),
        'item', json_build_object(
            'id', i.id, 'project_id', i.project_id, 'split', i.split,
            'external_id', i.external_id, 'blob_sha256', i.blob_sha256,
            'media_type', i.media_type, 'width', i.width, 'height', i.height,
            'meta', i.meta, 'created_at', i.created_at),
        'cycle_id', p_cycle_id,
        'cycle_state', 'labeling')
$$;
"""

NEXT = r"""
CREATE OR REPLACE FUNCTION annoloop_next(
    p_token_hash text, p_project_id integer, p_now timestamptz, p_lease_seconds integer,
    p_want integer
) RETURNS json LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    c record;
    p project;
    v_entries integer[];
    e record;
    v_budget integer;
    v_open integer;
    v_lease json;
    v_leases json[] := '{}';
    v_cycle_id integer;
    v_cycle_state text;
BEGIN
    -- A lease is not a label: if the database crashed before this commit reached the disk,
    -- the caller's submit would get 409 and it would ask again. So this commit does not
    -- wait for the WAL flush (a submit, which does, flushes it along with its own).
    PERFORM set_config('synchronous_commit', 'off', true);
    SELECT * INTO c FROM annoloop_caller(p_token_hash, p_now);
    p := annoloop_visible_project(p_project_id, c.annotator_id, c.is_admin);

    -- The sweep (``expire_stale``): leases claimed with SKIP LOCKED, so sweeps never wait on
    -- each other and a lease being submitted is left alone; their slots are given back
    -- entry by entry in id order, so sweeps cannot deadlock.
    WITH stale AS (
        SELECT id FROM lease WHERE released_at IS NULL AND expires_at <= p_now
        FOR UPDATE SKIP LOCKED
    ), closed AS (
        UPDATE lease l SET released_at = p_now, outcome = 'expired'
        FROM stale WHERE l.id = stale.id RETURNING l.queue_entry_id
    )
    SELECT array_agg(queue_entry_id) INTO v_entries FROM closed;
    IF v_entries IS NOT NULL THEN
        FOR e IN SELECT entry, count(*) AS n FROM unnest(v_entries) AS entry
                 GROUP BY entry ORDER BY entry LOOP
            UPDATE queue_entry SET leases_open = leases_open - e.n WHERE id = e.entry;
        END LOOP;
    END IF;

    -- Asking again (a reload, a retry) gives back the same items, oldest lease first.
    SELECT coalesce(array_agg(j ORDER BY lease_id), '{}') INTO v_leases FROM (
        SELECT l.id AS lease_id, annoloop_leased(
            l.id, l.queue_entry_id, l.created_at, l.expires_at, q.cycle_id, i) AS j
        FROM lease l JOIN queue_entry q ON q.id = l.queue_entry_id
        JOIN item i ON i.id = l.item_id
        WHERE l.project_id = p.id AND l.annotator_id = c.annotator_id
          AND l.released_at IS NULL AND l.expires_at > p_now
        ORDER BY l.id LIMIT p_want
    ) held;

    v_budget := CASE WHEN p.kind = 'clean' THEN p.relabel_budget ELSE p.label_budget END;
    WHILE coalesce(array_length(v_leases, 1), 0) < p_want LOOP
        IF v_budget IS NOT NULL THEN
            SELECT count(*) INTO v_open FROM lease
            WHERE project_id = p.id AND released_at IS NULL;
            IF p.labels_spent + v_open >= v_budget THEN
                IF coalesce(array_length(v_leases, 1), 0) = 0 THEN
                    RETURN json_build_object('status', 'budget_spent');
                END IF;
                EXIT;
            END IF;
        END IF;
        -- ``pick_entry``: the best-ranked open entry of a labelling cycle with a free slot
        -- that this annotator has neither labelled, skipped nor holds; locked, rows others
        -- hold skipped. Then its lease and the slot count (``add_lease``).
        WITH picked AS (
            SELECT q.id AS entry_id, q.cycle_id, q.item_id
            FROM queue_entry q
            WHERE q.project_id = p.id AND q.state = 'open'
              AND q.labels_received + q.leases_open < q.labels_wanted
              AND EXISTS (SELECT 1 FROM cycle cy WHERE cy.id = q.cycle_id AND cy.state = 'labeling')
              AND NOT EXISTS (
                  SELECT 1 FROM annotation an
                  WHERE an.item_id = q.item_id AND an.annotator_id = c.annotator_id
                    AND an.retracted_at IS NULL)
              AND NOT EXISTS (
                  SELECT 1 FROM lease s
                  WHERE s.queue_entry_id = q.id AND s.annotator_id = c.annotator_id
                    AND (s.released_at IS NULL OR s.outcome = 'skipped'))
            ORDER BY q.rank, q.id LIMIT 1
            FOR UPDATE OF q SKIP LOCKED
        ), leased AS (
            INSERT INTO lease (project_id, queue_entry_id, item_id, annotator_id, created_at,
                               expires_at)
            SELECT p.id, entry_id, item_id, c.annotator_id, p_now,
                   p_now + make_interval(secs => p_lease_seconds)
            FROM picked
            RETURNING id, queue_entry_id, created_at, expires_at
        ), counted AS (
            UPDATE queue_entry SET leases_open = leases_open + 1
            FROM picked WHERE queue_entry.id = picked.entry_id
        )
        SELECT annoloop_leased(l.id, l.queue_entry_id, l.created_at, l.expires_at, pk.cycle_id, i)
        INTO v_lease
        FROM leased l JOIN picked pk ON true JOIN item i ON i.id = pk.item_id;
        IF v_lease IS NULL THEN
            IF coalesce(array_length(v_leases, 1), 0) = 0 THEN
                SELECT cy.id, cy.state INTO v_cycle_id, v_cycle_state FROM cycle cy
                WHERE cy.project_id = p.id ORDER BY cy.number DESC LIMIT 1;
                RETURN json_build_object(
                    'status', 'queue_empty', 'cycle_id', v_cycle_id,
                    'cycle_state', v_cycle_state);
            END IF;
            EXIT;
        END IF;
        v_leases := v_leases || v_lease;
    END LOOP;
    RETURN json_build_object('leases', array_to_json(v_leases));
END $$;
"""

SUBMIT = r"""
CREATE OR REPLACE FUNCTION annoloop_submit(
    p_token_hash text, p_item_id integer, p_class_index numeric, p_key text,
    p_now timestamptz
) RETURNS json LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    c record;
    i item;
    p project;
    a annotation;
    v_classes integer;
    v_entry_id integer;
    v_cycle_id integer;
    v_state text;
    v_done boolean;
    v_counts bigint[];
    v_spent integer;
    v_advance boolean := false;
    v_refresh boolean := false;
    v_last record;
BEGIN
    SELECT * INTO c FROM annoloop_caller(p_token_hash, p_now);
    SELECT * INTO i FROM item WHERE id = p_item_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'not_found' USING ERRCODE = 'AL404',
            DETAIL = format('item %s not found', p_item_id);
    END IF;
    p := annoloop_visible_project(i.project_id, c.annotator_id, c.is_admin);
    v_classes := json_array_length(p.classes);
    -- ``p_class_index`` is numeric: any integer the API accepts gets this 422, none a 500.
    IF p_class_index < 0 OR p_class_index >= v_classes THEN
        RAISE EXCEPTION 'wrong_class' USING ERRCODE = 'AL422', DETAIL = format(
            'class_index %s is out of range: this project has %s classes (0–%s)',
            p_class_index, v_classes, v_classes - 1);
    END IF;

    -- A resent submission with the same idempotency key returns the stored label.
    IF p_key IS NOT NULL THEN
        SELECT * INTO a FROM annotation
        WHERE annotator_id = c.annotator_id AND idempotency_key = p_key;
        IF FOUND THEN
            IF a.item_id <> p_item_id OR a.class_index <> p_class_index THEN
                RAISE EXCEPTION 'idempotency_key_reused' USING ERRCODE = 'AL409',
                    DETAIL = 'this idempotency key was already used for a different label';
            END IF;
            RETURN json_build_object('replayed', true, 'annotation', row_to_json(a));
        END IF;
    END IF;
    IF i.split = 'test' THEN
        RAISE EXCEPTION 'test_item' USING ERRCODE = 'AL409',
            DETAIL = 'test items are labelled by import, not in the queue';
    END IF;
    -- ``annotator_id + 0``: looked up by item (a handful of labels), never through the
    -- (annotator, key) index, which would read every label the annotator ever gave.
    IF EXISTS (
        SELECT 1 FROM annotation
        WHERE item_id = p_item_id AND annotator_id + 0 = c.annotator_id AND source = 'human'
          AND retracted_at IS NULL
    ) THEN
        RAISE EXCEPTION 'already_labelled' USING ERRCODE = 'AL409',
            DETAIL = format('you already labelled item %s', p_item_id);
    END IF;

    -- Lock order as everywhere: lease, queue entry, project.
    UPDATE lease SET released_at = p_now, outcome = 'labelled'
    WHERE item_id = p_item_id AND annotator_id = c.annotator_id
      AND released_at IS NULL AND expires_at > p_now
    RETURNING queue_entry_id INTO v_entry_id;
    IF NOT FOUND THEN
        SELECT outcome, released_at, expires_at INTO v_last FROM lease
        WHERE item_id = p_item_id AND annotator_id = c.annotator_id
        ORDER BY id DESC LIMIT 1;
        IF FOUND AND (v_last.outcome = 'expired'
                      OR (v_last.released_at IS NULL AND v_last.expires_at <= p_now)) THEN
            RAISE EXCEPTION 'lease_expired' USING ERRCODE = 'AL409',
                DETAIL = 'your lease on this item expired; ask for the next item';
        END IF;
        RAISE EXCEPTION 'not_leased' USING ERRCODE = 'AL409',
            DETAIL = format('item %s is not leased to you', p_item_id);
    END IF;
    UPDATE queue_entry SET
        leases_open = leases_open - 1,
        labels_received = labels_received + 1,
        state = CASE WHEN labels_received + 1 >= labels_wanted THEN 'done' ELSE state END
    WHERE id = v_entry_id
    RETURNING cycle_id, state INTO v_cycle_id, v_state;
    -- A concurrent request that won the same slot makes this a unique violation (409).
    INSERT INTO annotation (item_id, project_id, annotator_id, class_index, source, cycle_id,
                            idempotency_key, created_at)
    VALUES (p_item_id, p.id, c.annotator_id, p_class_index, 'human', v_cycle_id, p_key, p_now)
    RETURNING * INTO a;
    v_done := v_state = 'done';

    IF p.kind = 'clean' THEN
        -- ``settle``: the item stays queued, one more label at a time, until the top class
        -- has strictly more live votes than any other (``app.annotations.votes.summarise``).
        SELECT array_agg(n ORDER BY n DESC) INTO v_counts FROM (
            SELECT count(*) AS n FROM annotation
            WHERE item_id = p_item_id AND retracted_at IS NULL GROUP BY class_index
        ) votes;
        IF array_length(v_counts, 1) > 1 AND v_counts[1] = v_counts[2] THEN
            UPDATE queue_entry SET labels_wanted = labels_received + 1, state = 'open'
            WHERE id = v_entry_id;
            v_done := false;
        END IF;
    END IF;

    UPDATE project SET labels_spent = labels_spent + 1, updated_at = p_now
    WHERE id = p.id AND (
        CASE WHEN kind = 'clean' THEN relabel_budget ELSE label_budget END IS NULL
        OR labels_spent + 1 <= CASE WHEN kind = 'clean' THEN relabel_budget ELSE label_budget END)
    RETURNING labels_spent INTO v_spent;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'budget_spent' USING ERRCODE = 'AL409',
            DETAIL = 'the project''s label budget is spent';
    END IF;
    -- After the project row is locked (above): a concurrent submit that finished this
    -- cycle's other last entry has committed by now, so one of the two sees none open.
    IF v_done THEN
        -- ``cycle_id + 0``: the first open entry through the (project, state, rank, id)
        -- index, never the (cycle, item) one, which reads every entry of the cycle.
        v_advance := NOT EXISTS (
            SELECT 1 FROM queue_entry
            WHERE project_id = p.id AND state = 'open' AND cycle_id + 0 = v_cycle_id);
    END IF;
    IF NOT v_advance AND coalesce(p.finetune_every, 0) > 0 THEN
        v_refresh := v_spent % p.finetune_every = 0;
    END IF;
    RETURN json_build_object(
        'replayed', false, 'annotation', row_to_json(a), 'advance', v_advance,
        'refresh', v_refresh);
END $$;
"""

FUNCTIONS = (
    "annoloop_submit(text, integer, numeric, text, timestamptz)",
    "annoloop_next(text, integer, timestamptz, integer, integer)",
    "annoloop_leased(integer, integer, timestamptz, timestamptz, integer, item)",
    "annoloop_visible_project(integer, integer, boolean)",
    "annoloop_caller(text, timestamptz)",
)


OPEN = sa.text("released_at IS NULL")


def upgrade() -> None:
    with op.batch_alter_table("queue_entry") as batch_op:
        batch_op.drop_index("ix_queue_entry_cycle_id")
    with op.batch_alter_table("annotation") as batch_op:
        batch_op.drop_index("ix_annotation_annotator_id")
    with op.batch_alter_table("lease") as batch_op:
        batch_op.create_index(
            "ix_lease_open_by_project",
            ["project_id", "annotator_id"],
            unique=False,
            sqlite_where=OPEN,
            postgresql_where=OPEN,
        )
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite runs the ORM path (app.queue.service, app.annotations.service)
    op.execute("ALTER TABLE queue_entry SET (fillfactor = 70)")
    for sql in (CALLER, VISIBLE_PROJECT, LEASED, NEXT, SUBMIT):
        op.execute(sql)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for signature in FUNCTIONS:
            op.execute(f"DROP FUNCTION IF EXISTS {signature}")
        op.execute("ALTER TABLE queue_entry RESET (fillfactor)")
    with op.batch_alter_table("lease") as batch_op:
        batch_op.drop_index("ix_lease_open_by_project")
    with op.batch_alter_table("annotation") as batch_op:
        batch_op.create_index("ix_annotation_annotator_id", ["annotator_id"], unique=False)
    with op.batch_alter_table("queue_entry") as batch_op:
        batch_op.create_index("ix_queue_entry_cycle_id", ["cycle_id"], unique=False)
