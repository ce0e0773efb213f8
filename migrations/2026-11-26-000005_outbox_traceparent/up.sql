-- The W3C traceparent an event is published with: the span of the request
-- that produced it, so a consumer's trace continues. Kept with the event so
-- every copy, from the worker or from the relay, carries the same one.
-- Adding a nullable column rewrites nothing.
ALTER TABLE outbox_events ADD COLUMN traceparent text;
