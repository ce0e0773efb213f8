-- The outbox where it meets rows changed by hand or by another release,
-- and replicas of two releases (docs/upgrades.md). Nothing here reads or
-- rewrites a large table: a nullable column, two new tables, and indexes
-- on the outbox tables, which hold only unpublished events.

-- A reference's bytes, checked: the first 8 bytes of the SHA-256 of the
-- event as first built, big-endian, as a bigint. The relay publishes a
-- rebuilt event only when its bytes hash the same; otherwise (a row it is
-- rebuilt from was changed or deleted, or a newer release built another
-- shape) it sets the reference aside instead of publishing other bytes
-- under the same event id. References written before this have none and
-- are rebuilt as before.
ALTER TABLE outbox_disconnections ADD COLUMN payload_digest bigint;

-- References that cannot be published: moved here by the relay with the
-- problem found, so they never hold up another event or a fan-out. Listed
-- by `disconnect-worker outbox set-aside list`, alerted on, and moved back
-- (`retry`) or dropped (`discard`) by an operator. The columns are the
-- reference's, so a retry puts it back as it was.
CREATE TABLE outbox_set_aside (
    event_id       uuid        PRIMARY KEY,
    request_id     uuid        NOT NULL,
    connection_id  uuid        NOT NULL,
    scope          text        NOT NULL,
    reason_code    text,
    occurred_at    timestamptz NOT NULL,
    traceparent    text,
    payload_digest bigint,
    created_at     timestamptz NOT NULL,
    set_aside_at   timestamptz NOT NULL DEFAULT now(),
    problem        text        NOT NULL
);

-- A fan-out's completion waits until none of its events is left in the
-- outbox; it asks every 100 ms per replica while the last events go out,
-- exactly when the outbox may be large (after a broker outage). Its events
-- are whole, or by reference with the fan-out's scope, which the partial
-- index covers: a single request's references (most rows) are not in it.
CREATE INDEX IF NOT EXISTS outbox_events_by_request
    ON outbox_events (request_id);
CREATE INDEX IF NOT EXISTS outbox_disconnections_of_fanouts
    ON outbox_disconnections (request_id)
    WHERE scope IN ('company', 'client');

-- Settings every replica reads from the database, so that all of them
-- agree: the outbox format. `whole` (every event with its bytes, which
-- every release reads) or `by_reference` (a connection.disconnected event
-- kept by reference, which 0.3.x and earlier cannot publish). A database
-- upgraded from an earlier release starts `whole`, so a rolling upgrade
-- and a rollback stay safe; one this release creates starts `by_reference`
-- (db::setup::migrate). `disconnect-worker outbox format` changes it.
CREATE TABLE shared_settings (
    name       text        PRIMARY KEY,
    value      text        NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO shared_settings (name, value) VALUES ('outbox_format', 'whole');
