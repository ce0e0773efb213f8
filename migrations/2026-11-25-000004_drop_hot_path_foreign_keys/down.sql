ALTER TABLE disconnect_requests
    ADD FOREIGN KEY (connection_id) REFERENCES connections (id);
ALTER TABLE disconnect_requests
    ADD FOREIGN KEY (token_id) REFERENCES access_tokens (id);
ALTER TABLE outbox_events
    ADD FOREIGN KEY (request_id) REFERENCES disconnect_requests (request_id);
ALTER TABLE connections
    ADD FOREIGN KEY (disconnected_by_request) REFERENCES disconnect_requests (request_id)
    DEFERRABLE INITIALLY DEFERRED;
