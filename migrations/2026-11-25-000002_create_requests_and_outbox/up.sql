-- One row per processed disconnect request: its outcome for audit, and the
-- idempotency record (a request id seen here is never processed again).
CREATE TABLE disconnect_requests (
    request_id          uuid        PRIMARY KEY,
    outcome             text        NOT NULL
                                    CHECK (outcome IN ('disconnected', 'unknown_token', 'already_disconnected')),
    connection_id       uuid        REFERENCES connections (id),
    token_id            uuid        REFERENCES access_tokens (id),
    revoked_token_count integer     NOT NULL DEFAULT 0 CHECK (revoked_token_count >= 0),
    requested_at        timestamptz,
    requested_by        text        CHECK (length(requested_by) <= 256),
    reason              text        CHECK (length(reason) <= 1024),
    processed_at        timestamptz NOT NULL DEFAULT now(),
    event_id            uuid        NOT NULL UNIQUE
);

-- Transactional outbox: the outcome event is written in the same transaction
-- as the revocation and published afterwards, at least once. payload is text,
-- not jsonb, so a re-sent event is byte-identical to the first.
CREATE TABLE outbox_events (
    id           bigserial   PRIMARY KEY,
    event_id     uuid        NOT NULL UNIQUE,
    request_id   uuid        NOT NULL REFERENCES disconnect_requests (request_id),
    routing_key  text        NOT NULL,
    payload      text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);

-- The relay only ever scans the unpublished tail.
CREATE INDEX outbox_events_unpublished
    ON outbox_events (id)
    WHERE published_at IS NULL;

ALTER TABLE connections
    ADD FOREIGN KEY (disconnected_by_request) REFERENCES disconnect_requests (request_id)
    DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE access_tokens
    ADD FOREIGN KEY (revoked_by_request) REFERENCES disconnect_requests (request_id)
    DEFERRABLE INITIALLY DEFERRED;
