-- Signed webhooks to the customer's application (docs/webhooks.md).
--
-- An endpoint belongs to one application (`client_id`). Its signing secret
-- is kept sealed (AES-256-GCM under the operator's WEBHOOK_SECRET_KEY), so
-- a dump of this table alone does not reveal it. After `rotate-secret` the
-- previous secret keeps signing until `previous_secret_expires_at`.
CREATE TABLE webhook_endpoints (
    id uuid PRIMARY KEY,
    client_id text NOT NULL,
    url text NOT NULL,
    -- Empty: every outcome event type.
    event_types text[] NOT NULL DEFAULT '{}',
    header_format text NOT NULL CHECK (header_format IN ('standard', 'finch')),
    secret_sealed bytea NOT NULL,
    previous_secret_sealed bytea,
    previous_secret_expires_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- Since the first failed attempt after the last success; cleared by a
    -- success. An endpoint failing for WEBHOOK_DISABLE_AFTER_SECS is disabled.
    failing_since timestamptz,
    disabled_at timestamptz,
    -- `operator`, `gone` (the receiver answered 410) or `failing`.
    disabled_reason text,
    -- When the `webhook.endpoint_disabled` event was confirmed by the
    -- broker; NULL while it is owed (only for `gone` and `failing`).
    disabled_announced_at timestamptz
);

-- Intake: the enabled endpoints of an application.
CREATE INDEX webhook_endpoints_enabled_by_client
    ON webhook_endpoints (client_id) WHERE disabled_at IS NULL;
-- The announcer: disabled endpoints whose event is still owed.
CREATE INDEX webhook_endpoints_unannounced
    ON webhook_endpoints (disabled_at) WHERE disabled_at IS NOT NULL AND disabled_announced_at IS NULL;

-- One outcome event, its body exactly as published on RabbitMQ: every
-- attempt to every endpoint sends these bytes.
CREATE TABLE webhook_messages (
    event_id uuid PRIMARY KEY,
    event_type text NOT NULL,
    client_id text NOT NULL,
    payload text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_messages_received_at ON webhook_messages (received_at);

-- One event to one endpoint. `next_attempt_at` is also the lease: a
-- dispatcher that takes a delivery moves it past the attempt's timeout, so
-- a dispatcher killed mid-attempt leaves it due again, not lost.
CREATE TABLE webhook_deliveries (
    id bigserial PRIMARY KEY,
    event_id uuid NOT NULL REFERENCES webhook_messages (event_id) ON DELETE CASCADE,
    endpoint_id uuid NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    UNIQUE (endpoint_id, event_id)
);
-- The dispatcher works by endpoint: this index gives an endpoint's first
-- due deliveries (never the backlog behind them), and, one probe per
-- endpoint, which endpoints have one due (a loose index scan). A receiver
-- that is down, with thousands of deliveries waiting, costs one probe,
-- where reading deliveries by due time would read past all of them.
CREATE INDEX webhook_deliveries_due
    ON webhook_deliveries (endpoint_id, next_attempt_at) WHERE status = 'pending';
-- `webhooks attempts --event-id`, `webhooks resend --event-id`.
CREATE INDEX webhook_deliveries_by_event ON webhook_deliveries (event_id);
-- `webhooks attempts --failed`.
CREATE INDEX webhook_deliveries_failed
    ON webhook_deliveries (finished_at) WHERE status = 'failed';

-- Every attempt: what the receiver answered (never more of its body than a
-- short excerpt), or why there was no answer.
CREATE TABLE webhook_attempts (
    id bigserial PRIMARY KEY,
    delivery_id bigint NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempted_at timestamptz NOT NULL,
    duration_ms integer NOT NULL,
    status_code integer,
    error text,
    response_excerpt text,
    next_attempt_at timestamptz
);
CREATE INDEX webhook_attempts_by_delivery ON webhook_attempts (delivery_id);
