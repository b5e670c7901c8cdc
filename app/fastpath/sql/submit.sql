-- POST /items/{id}/annotations: the rules of app.annotations.service.submit, one call per
-- request (app/fastpath/label.py), in the same order. Installed by `annoloop migrate`;
-- rule ids: app/fastpath/rules.py.
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
    v_wanted integer;
    v_received integer;
    v_stop_lead integer;
    v_done boolean;
    v_counts bigint[];
    v_spent integer;
    v_advance boolean := false;
    v_refresh boolean := false;
    v_last record;
    v_replay json;
BEGIN
    SELECT * INTO c FROM annoloop_caller(p_token_hash, p_now);
    SELECT * INTO i FROM item WHERE id = p_item_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'not_found' USING ERRCODE = 'AL404',
            DETAIL = format('item %s not found', p_item_id);
    END IF;
    p := annoloop_visible_project(i.project_id, c.annotator_id, c.is_admin);
    v_classes := json_array_length(p.classes);
    -- R-CLASS-RANGE. ``p_class_index`` is numeric: any integer the API accepts gets this
    -- 422, none a 500.
    IF p_class_index < 0 OR p_class_index >= v_classes THEN
        RAISE EXCEPTION 'wrong_class' USING ERRCODE = 'AL422', DETAIL = format(
            'class_index %s is out of range: this project has %s classes (0–%s)',
            p_class_index, v_classes, v_classes - 1);
    END IF;

    -- R-REPLAY. A resent submission with the same idempotency key returns the stored label.
    IF p_key IS NOT NULL THEN
        v_replay := annoloop_replay(c.annotator_id, p_key, p_item_id, p_class_index);
        IF v_replay IS NOT NULL THEN
            RETURN v_replay;
        END IF;
    END IF;
    -- R-TEST-ITEM
    IF i.split = 'test' THEN
        RAISE EXCEPTION 'test_item' USING ERRCODE = 'AL409',
            DETAIL = 'test items are labelled by import, not in the queue';
    END IF;
    -- R-ONE-LABEL. ``annotator_id + 0``: looked up by item (a handful of labels), never through the
    -- (annotator, key) index, which would read every label the annotator ever gave.
    IF EXISTS (
        SELECT 1 FROM annotation
        WHERE item_id = p_item_id AND annotator_id + 0 = c.annotator_id AND source = 'human'
          AND retracted_at IS NULL
    ) THEN
        -- A concurrent resend of this key committed after the lookup above.
        v_replay := annoloop_replay(c.annotator_id, p_key, p_item_id, p_class_index);
        IF v_replay IS NOT NULL THEN
            RETURN v_replay;
        END IF;
        RAISE EXCEPTION 'already_labelled' USING ERRCODE = 'AL409',
            DETAIL = format('you already labelled item %s', p_item_id);
    END IF;

    -- R-NOT-LEASED. Lock order as everywhere: lease, queue entry, project.
    UPDATE lease SET released_at = p_now, outcome = 'labelled'
    WHERE item_id = p_item_id AND annotator_id = c.annotator_id
      AND released_at IS NULL AND expires_at > p_now
    RETURNING queue_entry_id INTO v_entry_id;
    IF NOT FOUND THEN
        -- The lease was closed by a concurrent resend of this key (this UPDATE waited
        -- for its commit).
        v_replay := annoloop_replay(c.annotator_id, p_key, p_item_id, p_class_index);
        IF v_replay IS NOT NULL THEN
            RETURN v_replay;
        END IF;
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
    -- R-COUNT-LABEL
    UPDATE queue_entry SET
        leases_open = leases_open - 1,
        labels_received = labels_received + 1,
        state = CASE WHEN labels_received + 1 >= labels_wanted THEN 'done' ELSE state END
    WHERE id = v_entry_id
    RETURNING cycle_id, state, labels_wanted, labels_received, stop_lead
    INTO v_cycle_id, v_state, v_wanted, v_received, v_stop_lead;
    -- A concurrent request that won the same slot makes this a unique violation (409).
    INSERT INTO annotation (item_id, project_id, annotator_id, class_index, source, cycle_id,
                            idempotency_key, created_at)
    VALUES (p_item_id, p.id, c.annotator_id, p_class_index, 'human', v_cycle_id, p_key, p_now)
    RETURNING * INTO a;
    v_done := v_state = 'done';

    -- ActiveLab's mixed queue asks for one label an entry (``queue.settle``); the
    -- cycle's strategy decides, as a cycle may be started with another than the
    -- project's.
    IF p.kind = 'clean'
       AND (SELECT strategy FROM cycle WHERE id = v_cycle_id) <> 'activelab' THEN
        -- R-MAJORITY. ``settle``: the item stays queued, one more label at a time, until the
        -- top class has strictly more live votes than any other (``votes.summarise``).
        SELECT array_agg(n ORDER BY n DESC) INTO v_counts FROM (
            SELECT count(*) AS n FROM annotation
            WHERE item_id = p_item_id AND retracted_at IS NULL GROUP BY class_index
        ) votes;
        IF array_length(v_counts, 1) > 1 AND v_counts[1] = v_counts[2] THEN
            UPDATE queue_entry SET labels_wanted = labels_received + 1, state = 'open'
            WHERE id = v_entry_id;
            v_done := false;
        END IF;
    ELSIF (p.stop_when_decided OR v_stop_lead IS NOT NULL) AND NOT v_done THEN
        -- R-STOP-DECIDED. ``stop_if_decided``: no label this entry still wants can change the
        -- majority, or the lead has reached ``stop_lead`` (a NULL stop_lead never does).
        SELECT array_agg(n ORDER BY n DESC) INTO v_counts FROM (
            SELECT count(*) AS n FROM annotation
            WHERE item_id = p_item_id AND retracted_at IS NULL GROUP BY class_index
        ) votes;
        IF (p.stop_when_decided
            AND v_counts[1] - coalesce(v_counts[2], 0) > v_wanted - v_received)
           OR v_counts[1] - coalesce(v_counts[2], 0) >= v_stop_lead THEN
            UPDATE queue_entry SET labels_wanted = labels_received, state = 'done'
            WHERE id = v_entry_id;
            v_done := true;
        END IF;
    END IF;

    -- R-SPEND
    UPDATE project SET labels_spent = labels_spent + 1, updated_at = p_now
    WHERE id = p.id AND (
        CASE WHEN kind = 'clean' THEN relabel_budget ELSE label_budget END IS NULL
        OR labels_spent + 1 <= CASE WHEN kind = 'clean' THEN relabel_budget ELSE label_budget END)
    RETURNING labels_spent INTO v_spent;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'budget_spent' USING ERRCODE = 'AL409',
            DETAIL = 'the project''s label budget is spent';
    END IF;
    -- R-ADVANCE. After the project row is locked (above): a concurrent submit that finished
    -- this cycle's other last entry has committed by now, so one of the two sees none open.
    IF v_done THEN
        -- ``cycle_id + 0``: the first open entry through the (project, state, rank, id)
        -- index, never the (cycle, item) one, which reads every entry of the cycle.
        v_advance := NOT EXISTS (
            SELECT 1 FROM queue_entry
            WHERE project_id = p.id AND state = 'open' AND cycle_id + 0 = v_cycle_id);
    END IF;
    -- R-REFRESH
    IF NOT v_advance AND coalesce(p.finetune_every, 0) > 0 THEN
        v_refresh := v_spent % p.finetune_every = 0;
    END IF;
    RETURN json_build_object(
        'replayed', false, 'annotation', row_to_json(a), 'advance', v_advance,
        'refresh', v_refresh);
END $$;
