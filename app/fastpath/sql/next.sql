-- GET /projects/{id}/next: the rules of app.queue.service.next_item, one call per request
-- (app/fastpath/lease.py). Installed by `annoloop migrate`; rule ids: app/fastpath/rules.py.
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

    -- R-LEASE-SWEEP. The sweep (``expire_stale``): leases claimed with SKIP LOCKED, so sweeps
    -- never wait on each other and a lease being submitted is left alone; their slots are
    -- given back entry by entry in id order, so sweeps cannot deadlock.
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

    -- R-LEASE-HELD. Asking again (a reload, a retry) gives back the same items, oldest lease first.
    SELECT coalesce(array_agg(j ORDER BY lease_id), '{}') INTO v_leases FROM (
        SELECT l.id AS lease_id, annoloop_leased(
            l.id, l.queue_entry_id, l.created_at, l.expires_at, q.cycle_id, i) AS j
        FROM lease l JOIN queue_entry q ON q.id = l.queue_entry_id
        JOIN item i ON i.id = l.item_id
        WHERE l.project_id = p.id AND l.annotator_id = c.annotator_id
          AND l.released_at IS NULL AND l.expires_at > p_now
        ORDER BY l.id LIMIT p_want
    ) held;

    -- R-BUDGET
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
        -- R-PICK-ORDER, R-LEASE. ``pick_entry``: the best-ranked open entry of a labelling
        -- cycle with a free slot that this annotator has neither labelled, skipped nor holds;
        -- locked, rows others hold skipped. Then its lease and the slot count (``add_lease``).
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
            -- R-QUEUE-EMPTY
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
