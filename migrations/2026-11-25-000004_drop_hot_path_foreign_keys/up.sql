-- Foreign keys the disconnect transaction paid for on every row and never
-- needed (docs/performance.md: their checks were about a tenth of Postgres's
-- CPU under load, each a query per inserted row, and the KEY SHARE lock on a
-- token row is a write to its page).
--
-- Every referenced row is read or written by the same transaction that
-- writes the reference: the audit row names the connection and token it
-- just locked and read, the outbox row names the audit row inserted beside
-- it, and the connection names the request recorded in the same commit.
-- Nothing deletes connections, tokens or audit rows (a disconnect is final
-- and the rows stay for audit), so a reference cannot dangle later either.
-- The foreign key from a token to its connection stays: tokens are written
-- by `token issue`, not on the hot path.
ALTER TABLE disconnect_requests DROP CONSTRAINT disconnect_requests_connection_id_fkey;
ALTER TABLE disconnect_requests DROP CONSTRAINT disconnect_requests_token_id_fkey;
ALTER TABLE outbox_events DROP CONSTRAINT outbox_events_request_id_fkey;
ALTER TABLE connections DROP CONSTRAINT connections_disconnected_by_request_fkey;
