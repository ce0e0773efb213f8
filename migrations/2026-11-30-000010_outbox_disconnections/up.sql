-- A `connection.disconnected` event is kept in the outbox by reference:
-- its id, its request and connection, and what the request said (scope,
-- reason code, trace), not its bytes. Its body names the connection's
-- client, company and provider and the tokens and entities the request
-- revoked and ended, and those rows are written in the same transaction,
-- so a re-send rebuilds the same bytes from them (src/outbox/store). The
-- body (about 600 bytes at five tokens, most of the outbox row) was
-- written to the WAL once more for every disconnect (docs/performance.md,
-- "What one disconnect writes"). Every other event keeps its bytes in
-- `outbox_events`, as before.
--
-- A table of its own, not a null payload in `outbox_events`: a replica of
-- the previous version, during a rolling upgrade, neither sees these rows
-- nor fails on them, and the new replicas publish them. Rows live only
-- until the broker confirms their event, as in `outbox_events`; retention
-- keeps the connection and token rows a pending one is rebuilt from.
CREATE TABLE outbox_disconnections (
    -- UUIDv7: the rows' order is the order they were written in.
    event_id      uuid        PRIMARY KEY,
    request_id    uuid        NOT NULL,
    connection_id uuid        NOT NULL,
    scope         text        NOT NULL,
    reason_code   text,
    occurred_at   timestamptz NOT NULL,
    traceparent   text,
    -- The database's clock, for the relay delay (as in `outbox_events`).
    created_at    timestamptz NOT NULL DEFAULT now()
);
