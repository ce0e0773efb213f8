// The shape `diesel print-schema` prints for the migrations in `migrations/`.
// Written out by hand because diesel_cli needs libpq, which the build does not;
// any drift from the migrations fails the integration tests at the first query.

diesel::table! {
    access_tokens (id) {
        id -> Uuid,
        connection_id -> Uuid,
        token_hash -> Bytea,
        token_prefix -> Text,
        user_label -> Nullable<Text>,
        products -> Array<Text>,
        issued_at -> Timestamptz,
        revoked_at -> Nullable<Timestamptz>,
        revoked_by_request -> Nullable<Uuid>,
    }
}

diesel::table! {
    connection_entities (id) {
        id -> Uuid,
        connection_id -> Uuid,
        provider_entity_id -> Text,
        status -> Text,
        created_at -> Timestamptz,
        disconnected_at -> Nullable<Timestamptz>,
        disconnected_by_request -> Nullable<Uuid>,
    }
}

diesel::table! {
    connections (id) {
        id -> Uuid,
        client_id -> Text,
        company_id -> Text,
        provider_id -> Text,
        status -> Text,
        created_at -> Timestamptz,
        disconnected_at -> Nullable<Timestamptz>,
        disconnected_by_request -> Nullable<Uuid>,
    }
}

diesel::table! {
    disconnect_requests (request_id) {
        request_id -> Uuid,
        outcome -> Text,
        connection_id -> Nullable<Uuid>,
        token_id -> Nullable<Uuid>,
        revoked_token_count -> Int4,
        requested_at -> Nullable<Timestamptz>,
        requested_by -> Nullable<Text>,
        reason -> Nullable<Text>,
        processed_at -> Timestamptz,
        event_id -> Nullable<Uuid>,
        scope -> Text,
        reason_code -> Nullable<Text>,
        client_id -> Nullable<Text>,
        company_id -> Nullable<Text>,
        publisher -> Nullable<Text>,
        disconnected_connections -> Nullable<Int4>,
    }
}

diesel::table! {
    disconnect_fanouts (request_id) {
        request_id -> Uuid,
        scope -> Text,
        client_id -> Text,
        company_id -> Nullable<Text>,
        reason_code -> Nullable<Text>,
        traceparent -> Nullable<Text>,
        accepted_at -> Timestamptz,
        created_before -> Timestamptz,
        last_connection_id -> Nullable<Uuid>,
        connections -> Int8,
        tokens -> Int8,
        finished_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    outbox_disconnections (event_id) {
        event_id -> Uuid,
        request_id -> Uuid,
        connection_id -> Uuid,
        scope -> Text,
        reason_code -> Nullable<Text>,
        occurred_at -> Timestamptz,
        traceparent -> Nullable<Text>,
        created_at -> Timestamptz,
        payload_digest -> Nullable<Int8>,
    }
}

diesel::table! {
    outbox_events (event_id) {
        id -> Int8,
        event_id -> Uuid,
        request_id -> Uuid,
        routing_key -> Text,
        payload -> Text,
        created_at -> Timestamptz,
        published_at -> Nullable<Timestamptz>,
        traceparent -> Nullable<Text>,
        subject -> Nullable<Text>,
        occurred_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    outbox_set_aside (event_id) {
        event_id -> Uuid,
        request_id -> Uuid,
        connection_id -> Uuid,
        scope -> Text,
        reason_code -> Nullable<Text>,
        occurred_at -> Timestamptz,
        traceparent -> Nullable<Text>,
        payload_digest -> Nullable<Int8>,
        created_at -> Timestamptz,
        set_aside_at -> Timestamptz,
        problem -> Text,
    }
}

diesel::table! {
    shared_settings (name) {
        name -> Text,
        value -> Text,
        changed_at -> Timestamptz,
    }
}

diesel::table! {
    webhook_endpoints (id) {
        id -> Uuid,
        client_id -> Text,
        url -> Text,
        event_types -> Array<Text>,
        header_format -> Text,
        secret_sealed -> Bytea,
        previous_secret_sealed -> Nullable<Bytea>,
        previous_secret_expires_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        failing_since -> Nullable<Timestamptz>,
        disabled_at -> Nullable<Timestamptz>,
        disabled_reason -> Nullable<Text>,
        disabled_announced_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    webhook_messages (event_id) {
        event_id -> Uuid,
        event_type -> Text,
        client_id -> Text,
        payload -> Text,
        received_at -> Timestamptz,
    }
}

diesel::table! {
    webhook_deliveries (id) {
        id -> Int8,
        event_id -> Uuid,
        endpoint_id -> Uuid,
        status -> Text,
        attempts -> Int4,
        next_attempt_at -> Timestamptz,
        created_at -> Timestamptz,
        finished_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    webhook_attempts (id) {
        id -> Int8,
        delivery_id -> Int8,
        attempted_at -> Timestamptz,
        duration_ms -> Int4,
        status_code -> Nullable<Int4>,
        error -> Nullable<Text>,
        response_excerpt -> Nullable<Text>,
        next_attempt_at -> Nullable<Timestamptz>,
    }
}

diesel::joinable!(access_tokens -> connections (connection_id));
diesel::joinable!(connection_entities -> connections (connection_id));
diesel::joinable!(outbox_events -> disconnect_requests (request_id));
diesel::joinable!(webhook_attempts -> webhook_deliveries (delivery_id));
diesel::joinable!(webhook_deliveries -> webhook_endpoints (endpoint_id));
diesel::joinable!(webhook_deliveries -> webhook_messages (event_id));

diesel::allow_tables_to_appear_in_same_query!(
    access_tokens,
    connection_entities,
    connections,
    disconnect_fanouts,
    disconnect_requests,
    outbox_disconnections,
    outbox_events,
    outbox_set_aside,
    shared_settings,
    webhook_attempts,
    webhook_deliveries,
    webhook_endpoints,
    webhook_messages,
);
