-- Entities: the legal entities, EINs or divisions one employer manages in
-- one payroll system, connected together in one Connect session and sharing
-- one connection. An entity can be disconnected alone (the connection and
-- its tokens stay), and re-authenticating brings it back to the same
-- connection. Existing connections have none.
--
-- Safe on large live tables: a new, empty table, and constraints on
-- disconnect_requests replaced without a scan (below).
CREATE TABLE connection_entities (
    -- The entity_id requests name: assigned here (UUIDv7).
    id                      uuid        PRIMARY KEY,
    -- Deleted with its connection (retention deletes a connection only
    -- once it is disconnected and has no token left).
    connection_id           uuid        NOT NULL REFERENCES connections (id) ON DELETE CASCADE,
    -- The provider's own identifier for it.
    provider_entity_id      text        NOT NULL
                                        CHECK (length(provider_entity_id) BETWEEN 1 AND 128),
    status                  text        NOT NULL DEFAULT 'active'
                                        CHECK (status IN ('active', 'disconnected')),
    created_at              timestamptz NOT NULL DEFAULT now(),
    disconnected_at         timestamptz,
    disconnected_by_request uuid,
    CHECK ((status = 'disconnected') = (disconnected_at IS NOT NULL)),
    -- One row per provider entity and connection: re-authenticating finds it.
    UNIQUE (connection_id, provider_entity_id)
);

-- The new outcomes and scope. NOT VALID, and never validated: every
-- existing row satisfies the narrower constraints these replace, so a
-- validation would only scan the table; new rows are checked either way.
ALTER TABLE disconnect_requests
    DROP CONSTRAINT disconnect_requests_outcome_check,
    ADD CONSTRAINT disconnect_requests_outcome_check CHECK (outcome IN (
        'disconnected', 'token_revoked', 'unknown_token', 'unknown_connection',
        'already_disconnected', 'already_revoked', 'not_authorized', 'expired',
        'in_progress', 'completed', 'nothing_to_disconnect',
        'entities_disconnected', 'unknown_entity', 'would_disconnect_connection',
        'entities_already_disconnected')) NOT VALID,
    DROP CONSTRAINT disconnect_requests_scope_check,
    ADD CONSTRAINT disconnect_requests_scope_check
        CHECK (scope IN ('token', 'connection', 'company', 'client', 'entity')) NOT VALID;
