ALTER TABLE disconnect_requests ADD CONSTRAINT disconnect_requests_event_id_key UNIQUE (event_id);
ALTER TABLE outbox_events REPLICA IDENTITY DEFAULT;
ALTER TABLE outbox_events ADD PRIMARY KEY (id);
CREATE INDEX outbox_events_unpublished ON outbox_events (id) WHERE published_at IS NULL;
