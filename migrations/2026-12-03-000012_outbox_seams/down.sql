-- The previous schema has nowhere to keep a set-aside reference: refuse
-- rather than drop one. The lock is taken before counting, so no relay
-- sets one aside in between.
LOCK TABLE outbox_set_aside IN ACCESS EXCLUSIVE MODE;
DO $$
DECLARE
    set_aside bigint;
BEGIN
    SELECT count(*) INTO set_aside FROM outbox_set_aside;
    IF set_aside > 0 THEN
        RAISE EXCEPTION 'outbox_set_aside holds % connection.disconnected events set aside; retry or discard them (disconnect-worker outbox set-aside), then migrate down', set_aside;
    END IF;
END
$$;
DROP TABLE outbox_set_aside;
DROP TABLE shared_settings;
DROP INDEX IF EXISTS outbox_disconnections_of_fanouts;
DROP INDEX IF EXISTS outbox_events_by_request;
ALTER TABLE outbox_disconnections DROP COLUMN payload_digest;
