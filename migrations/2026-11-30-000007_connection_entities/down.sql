ALTER TABLE disconnect_requests
    DROP CONSTRAINT disconnect_requests_scope_check,
    ADD CONSTRAINT disconnect_requests_scope_check
        CHECK (scope IN ('token', 'connection', 'company', 'client')) NOT VALID,
    DROP CONSTRAINT disconnect_requests_outcome_check,
    ADD CONSTRAINT disconnect_requests_outcome_check CHECK (outcome IN (
        'disconnected', 'token_revoked', 'unknown_token', 'unknown_connection',
        'already_disconnected', 'already_revoked', 'not_authorized', 'expired',
        'in_progress', 'completed', 'nothing_to_disconnect')) NOT VALID;
DROP TABLE connection_entities;
