-- Fewer writes per disconnect (docs/performance.md, "What one disconnect
-- writes"). Safe on large live tables: no statement below reads or
-- rewrites a table.
--
-- The outbox: an event is now deleted once the broker confirms it, instead
-- of marked published and deleted days later (one non-HOT update of the
-- whole row, payload included, and its index entries, saved per event).
-- Every row left is one to publish, so the partial index on unpublished
-- rows is the table itself, and the unique event id (UUIDv7, in time
-- order) keys the rows as the bigserial did: one index where there were
-- three. Its index already exists (a unique constraint), so nothing is
-- built; it becomes the replica identity the primary key was. The `id`
-- column stays, unindexed, and so does `published_at`: version 0.2.0 can
-- run again on this schema (it marks and orders by id), and retention
-- deletes the rows it marked.
DROP INDEX IF EXISTS outbox_events_unpublished;
ALTER TABLE outbox_events DROP CONSTRAINT outbox_events_pkey;
ALTER TABLE outbox_events REPLICA IDENTITY USING INDEX outbox_events_event_id_key;

-- The audit row's event id needs no index: nothing looks a request up by
-- its event (one index entry saved per request).
ALTER TABLE disconnect_requests DROP CONSTRAINT disconnect_requests_event_id_key;
