-- The audit log is append-only for everyone but the table's owner: a trigger refuses
-- every UPDATE, DELETE and TRUNCATE, so the app's own role (or an SQL injection through
-- it) cannot rewrite history in place. The owner can still disable the trigger; the
-- hash chain (`proctor audit-log verify`) is what finds an edit made that way.
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_log_no_update_or_delete
    BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();

CREATE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
