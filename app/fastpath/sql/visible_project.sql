-- A project the caller may see (admins every one, others their memberships), else 404: a
-- project someone cannot see looks the same as one that does not exist
-- (app.projects.service.get_visible). Installed by `annoloop migrate`.
CREATE OR REPLACE FUNCTION annoloop_visible_project(
    p_project_id integer, p_annotator_id integer, p_is_admin boolean
) RETURNS project LANGUAGE plpgsql STABLE SET enable_seqscan = off AS $$
DECLARE
    p project;
BEGIN
    -- R-VISIBLE
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
