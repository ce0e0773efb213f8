-- Tokens and connections laid out for a population at rest, not for the
-- benchmark's stream of disconnects (docs/scaling.md, "Density"). Safe on
-- large live tables: nothing below reads or rewrites a table.
--
-- Fill factors. Migrations 3, 9 and 11 left room on every page for its
-- rows' one update (45 % of a token page filled, 60 % of a connection
-- page), to keep every revocation in place (HOT) and its WAL small. A
-- connection is disconnected once in its life, often years after it was
-- made, so that room was paid for by every token at rest: 434 bytes a
-- token of heap where its row is about 200. 88 leaves one connection's
-- tokens room to be revoked in place together: all five with short user
-- labels (measured: 99 % of the revocations of 3,000 random connections of
-- five tokens HOT, against 82 % at 90 and 5 % at 100), four of five with an
-- email address as the label (tests/it/density.rs); many connections
-- revoked in one transaction (a
-- fan-out) fill the room, and the rest move to other pages with new index
-- entries, which costs WAL in a rare event instead of space in every
-- token. 90 on connections leaves room for about nine disconnects a page.
-- As with migrations 9 and 11, only pages written from now on take the new
-- fill; existing pages keep theirs until the table is rewritten
-- (docs/operations.md, "Compacting tokens and connections").
ALTER TABLE access_tokens SET (fillfactor = 88);
ALTER TABLE connections SET (fillfactor = 90);

-- The tokens' primary key keeps a B-tree's default fill (90). Its ids are
-- UUIDv7, so new entries go to its right end, but not in order within a
-- millisecond; at 100 the pages those land in split in halves instead
-- (measured: 51 bytes a token at 100, 32 at 90, seeded in bulk).

-- Every remaining index of the two tables, and the query that reads it:
--   access_tokens_token_hash_key     every request's lookup; one token per hash
--   access_tokens_pkey               a token-scope revocation (by id), retention
--   access_tokens_by_connection      a connection's revocation, an event's rebuild
--   connections_pkey                 every request's lock, by id
--   connections_one_active_per_pair  `token issue` (one active connection per
--                                    client, company and provider); a company's
--                                    walk (below)
--   connections_active_by_client     an application's walk, in id order
--   connections_disconnected_at      retention (only disconnected rows)
-- A company's walk (scope `company`) read connections_active_by_company. A
-- company has one active connection per provider, so the pair index finds
-- the same handful of rows by its first two columns and they are sorted by
-- id in memory: an index of 16 bytes a token for nothing. The previous
-- release runs the same query and takes the same plan. IF EXISTS: an
-- operator may drop it CONCURRENTLY first.
DROP INDEX IF EXISTS connections_active_by_company;
