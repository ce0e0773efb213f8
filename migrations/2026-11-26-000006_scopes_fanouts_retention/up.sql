-- Requests at every scope (token, connection, company, client): what each
-- asked and who published it, for the audit trail. A company or client
-- request is recorded `in_progress` and gets its terminal outcome, and its
-- event, when its fan-out ends: its event id is set then.
ALTER TABLE disconnect_requests
    ADD COLUMN scope text NOT NULL DEFAULT 'connection',
    ADD COLUMN reason_code text,
    ADD COLUMN client_id text,
    ADD COLUMN company_id text,
    ADD COLUMN publisher text,
    ADD COLUMN disconnected_connections integer,
    ALTER COLUMN event_id DROP NOT NULL;

-- The outcomes of every scope. NOT VALID, then VALIDATE: the check of the
-- existing rows then takes a lock that lets writes through, and every
-- existing outcome is in the new list.
ALTER TABLE disconnect_requests
    DROP CONSTRAINT disconnect_requests_outcome_check,
    ADD CONSTRAINT disconnect_requests_outcome_check CHECK (outcome IN (
        'disconnected', 'token_revoked', 'unknown_token', 'unknown_connection',
        'already_disconnected', 'already_revoked', 'not_authorized', 'expired',
        'in_progress', 'completed', 'nothing_to_disconnect')) NOT VALID,
    ADD CONSTRAINT disconnect_requests_scope_check
        CHECK (scope IN ('token', 'connection', 'company', 'client')) NOT VALID,
    ADD CONSTRAINT disconnect_requests_reason_code_check CHECK (reason_code IN (
        'user_request', 'employer_offboarded', 'customer_offboarded',
        'credential_compromised', 'fraud', 'other')) NOT VALID;
ALTER TABLE disconnect_requests VALIDATE CONSTRAINT disconnect_requests_outcome_check;
ALTER TABLE disconnect_requests VALIDATE CONSTRAINT disconnect_requests_scope_check;
ALTER TABLE disconnect_requests VALIDATE CONSTRAINT disconnect_requests_reason_code_check;

-- A company or client request, worked through in chunks of connections in
-- id order, each chunk one transaction; the cursor and the counts move in
-- the same transaction as the chunk's revocations, so a crash or another
-- replica resumes exactly where the last commit left it.
CREATE TABLE disconnect_fanouts (
    request_id         uuid        PRIMARY KEY,
    scope              text        NOT NULL,
    client_id          text        NOT NULL,
    company_id         text,
    reason_code        text,
    traceparent        text,
    accepted_at        timestamptz NOT NULL,
    -- Only connections made before this are the request's to end: those
    -- that existed when it was asked (its requested_at, or when it was
    -- accepted if that is earlier). A replay of the request, even after its
    -- audit row is purged, therefore finds nothing active of its own.
    created_before     timestamptz NOT NULL,
    last_connection_id uuid,
    connections        bigint      NOT NULL DEFAULT 0,
    tokens             bigint      NOT NULL DEFAULT 0,
    finished_at        timestamptz
);
CREATE INDEX disconnect_fanouts_unfinished
    ON disconnect_fanouts (accepted_at)
    WHERE finished_at IS NULL;

-- The fan-out's walk: an application's, or a company's, active connections
-- in id order. IF NOT EXISTS on the indexes of the large tables: this
-- migration runs in a transaction, so it cannot build them CONCURRENTLY;
-- an operator with a large live table builds them so beforehand (README,
-- "Production checklist") and the migration then skips them.
CREATE INDEX IF NOT EXISTS connections_active_by_client
    ON connections (client_id, id)
    WHERE status = 'active';
CREATE INDEX IF NOT EXISTS connections_active_by_company
    ON connections (client_id, company_id, id)
    WHERE status = 'active';

-- Retention: what is purged by age. (Revoked tokens are found by a bounded
-- scan instead: an index on revoked_at would end the in-place (HOT)
-- revocations that migration 3 made possible.)
CREATE INDEX IF NOT EXISTS connections_disconnected_at
    ON connections (disconnected_at)
    WHERE status = 'disconnected';
CREATE INDEX IF NOT EXISTS disconnect_requests_processed_at
    ON disconnect_requests (processed_at);

-- What an event is published with besides its bytes and traceparent, kept
-- with it so the worker's copy and the relay's carry the same CloudEvents
-- attributes: its subject (the connection) and time. Rows from before have
-- neither: their time is their created_at, the same commit.
ALTER TABLE outbox_events
    ADD COLUMN subject text,
    ADD COLUMN occurred_at timestamptz;
