-- A connection is one employer (company_id) at one provider (provider_id)
-- inside one customer application (client_id). Disconnection is final: the
-- row stays for audit and a later authentication creates a new connection.
CREATE TABLE connections (
    id                      uuid        PRIMARY KEY,
    client_id               text        NOT NULL CHECK (length(client_id) BETWEEN 1 AND 128),
    company_id              text        NOT NULL CHECK (length(company_id) BETWEEN 1 AND 128),
    provider_id             text        NOT NULL CHECK (length(provider_id) BETWEEN 1 AND 128),
    status                  text        NOT NULL DEFAULT 'active'
                                        CHECK (status IN ('active', 'disconnected')),
    created_at              timestamptz NOT NULL DEFAULT now(),
    disconnected_at         timestamptz,
    disconnected_by_request uuid,
    CHECK ((status = 'disconnected') = (disconnected_at IS NOT NULL))
);

-- At most one active connection per (client, company, provider). Issuing a
-- token relies on this index to never create two.
CREATE UNIQUE INDEX connections_one_active_per_pair
    ON connections (client_id, company_id, provider_id)
    WHERE status = 'active';

-- Tokens are stored only as SHA-256 hashes; token_prefix is a short,
-- non-secret start of the token so people can recognise it.
CREATE TABLE access_tokens (
    id                 uuid        PRIMARY KEY,
    connection_id      uuid        NOT NULL REFERENCES connections (id),
    token_hash         bytea       NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    token_prefix       text        NOT NULL,
    user_label         text,
    products           text[]      NOT NULL DEFAULT '{}',
    issued_at          timestamptz NOT NULL DEFAULT now(),
    revoked_at         timestamptz,
    revoked_by_request uuid,
    CHECK ((revoked_at IS NULL) = (revoked_by_request IS NULL))
);

-- Revocation touches only the still-active tokens of one connection.
CREATE INDEX access_tokens_active_by_connection
    ON access_tokens (connection_id)
    WHERE revoked_at IS NULL;
