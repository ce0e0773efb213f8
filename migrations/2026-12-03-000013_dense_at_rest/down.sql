-- Built in the migration's transaction, so without CONCURRENTLY; on a large
-- live table build it CONCURRENTLY first (docs/operations.md) and this
-- skips it.
CREATE INDEX IF NOT EXISTS connections_active_by_company
    ON connections (client_id, company_id, id)
    WHERE status = 'active';
ALTER TABLE connections SET (fillfactor = 60);
ALTER TABLE access_tokens SET (fillfactor = 45);
