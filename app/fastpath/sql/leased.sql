-- What `next` shows of a lease: the shape of app.queue.schemas.NextOut (leased).
-- Installed by `annoloop migrate`.
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
