ALTER TABLE access_tokens DROP CONSTRAINT IF EXISTS access_tokens_revoked_by_request_fkey;
ALTER TABLE connections DROP CONSTRAINT IF EXISTS connections_disconnected_by_request_fkey;
DROP TABLE outbox_events;
DROP TABLE disconnect_requests;
