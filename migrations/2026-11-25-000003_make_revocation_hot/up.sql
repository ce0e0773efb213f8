-- Revoking a connection with many tokens must be one fast statement
-- (docs/performance.md). Two things made each revoked row expensive:
--
-- 1. The partial index `WHERE revoked_at IS NULL` names revoked_at, so every
--    revocation was a non-HOT update: a new index entry in every index of the
--    table (primary key, token_hash) for every token. A plain index on
--    connection_id leaves revoked_at and revoked_by_request unindexed, and
--    free space in each page (fillfactor) lets the update stay on its page
--    (HOT) with no index writes at all. A token is revoked at most once, so
--    the space is used once. Existing pages keep their fill until rewritten.
-- 2. The deferred foreign key on revoked_by_request was checked once per
--    revoked token at commit. The worker writes the request row in the same
--    transaction as the revocation, so the check bought nothing.
ALTER TABLE access_tokens DROP CONSTRAINT access_tokens_revoked_by_request_fkey;
DROP INDEX access_tokens_active_by_connection;
CREATE INDEX access_tokens_by_connection ON access_tokens (connection_id);
ALTER TABLE access_tokens SET (fillfactor = 50);
