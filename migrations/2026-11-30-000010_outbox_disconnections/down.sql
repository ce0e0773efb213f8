-- The previous version cannot publish these events: refuse rather than
-- lose them. Start this version until its outbox is empty (the graceful
-- stop publishes what is left), then migrate down. The lock comes first:
-- a replica still running cannot add a row between the count and the drop.
LOCK TABLE outbox_disconnections IN ACCESS EXCLUSIVE MODE;
DO $$
DECLARE
    pending bigint;
BEGIN
    SELECT count(*) INTO pending FROM outbox_disconnections;
    IF pending > 0 THEN
        RAISE EXCEPTION 'outbox_disconnections holds % unpublished connection.disconnected events; run this version until they are published (its graceful stop publishes them), then migrate down', pending;
    END IF;
END
$$;
DROP TABLE outbox_disconnections;
