-- Whose token this is (app.auth.service.authenticate), for annoloop_next and annoloop_submit.
-- Installed by `annoloop migrate` (app/fastpath/functions.py); rule ids: app/fastpath/rules.py.
CREATE OR REPLACE FUNCTION annoloop_caller(
    p_token_hash text, p_now timestamptz, OUT annotator_id integer, OUT is_admin boolean
) LANGUAGE plpgsql STABLE SET enable_seqscan = off AS $$
DECLARE
    r record;
BEGIN
    -- R-TOKEN
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
