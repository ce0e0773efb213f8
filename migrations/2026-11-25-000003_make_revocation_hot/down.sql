ALTER TABLE access_tokens RESET (fillfactor);
DROP INDEX access_tokens_by_connection;
CREATE INDEX access_tokens_active_by_connection ON access_tokens (connection_id) WHERE revoked_at IS NULL;
ALTER TABLE access_tokens
    ADD FOREIGN KEY (revoked_by_request) REFERENCES disconnect_requests (request_id)
    DEFERRABLE INITIALLY DEFERRED;
