-- The stored label of a resent idempotency key, or NULL (app.annotations.service._replay).
-- VOLATILE (the default) on purpose: each call reads what has committed by then, so a
-- resend that lost a race looks again where the conflict arises. Installed by `annoloop migrate`.
CREATE OR REPLACE FUNCTION annoloop_replay(
    p_annotator_id integer, p_key text, p_item_id integer, p_class_index numeric
) RETURNS json LANGUAGE plpgsql AS $$
DECLARE
    a annotation;
BEGIN
    -- R-REPLAY
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
