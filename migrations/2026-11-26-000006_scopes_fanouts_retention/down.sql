ALTER TABLE outbox_events
    DROP COLUMN subject,
    DROP COLUMN occurred_at;
-- Fails while a company or client request has no terminal event yet:
-- finish or delete those first.
DROP INDEX disconnect_requests_processed_at;
DROP INDEX connections_disconnected_at;
DROP INDEX connections_active_by_company;
DROP INDEX connections_active_by_client;
DROP TABLE disconnect_fanouts;
ALTER TABLE disconnect_requests
    DROP CONSTRAINT disconnect_requests_reason_code_check,
    DROP CONSTRAINT disconnect_requests_scope_check,
    DROP CONSTRAINT disconnect_requests_outcome_check,
    ADD CONSTRAINT disconnect_requests_outcome_check
        CHECK (outcome IN ('disconnected', 'unknown_token', 'already_disconnected')),
    DROP COLUMN scope,
    DROP COLUMN reason_code,
    DROP COLUMN client_id,
    DROP COLUMN company_id,
    DROP COLUMN publisher,
    DROP COLUMN disconnected_connections,
    ALTER COLUMN event_id SET NOT NULL;
