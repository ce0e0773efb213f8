//! The message contract as JSON Schemas, generated from the types that
//! write the messages, and checked in under `docs/schemas/` (a unit test
//! fails when a type changes without its file; `UPDATE_SCHEMAS=1 cargo
//! test` rewrites them).

use schemars::{schema_for, Schema};

use super::event::payload::{
    ConnectionDisconnected, DisconnectCompleted, DisconnectRejected, EntityDisconnected,
    TokenRevoked,
};
use super::event::{
    DISCONNECTED, DISCONNECT_COMPLETED, DISCONNECT_REJECTED, ENTITY_DISCONNECTED, TOKEN_REVOKED,
};
use super::request::RequestBody;

/// The AMQP `type` of a request, and its schema's name.
pub const REQUEST_TYPE: &str = "disconnect.request";

/// Each message type with its schema; a type's file is `<type>.json`.
pub fn schemas() -> Vec<(&'static str, Schema)> {
    vec![
        (REQUEST_TYPE, schema_for!(RequestBody<'static>)),
        (DISCONNECTED, schema_for!(ConnectionDisconnected<'static>)),
        (
            DISCONNECT_REJECTED,
            schema_for!(DisconnectRejected<'static>),
        ),
        (TOKEN_REVOKED, schema_for!(TokenRevoked<'static>)),
        (
            DISCONNECT_COMPLETED,
            schema_for!(DisconnectCompleted<'static>),
        ),
        (
            ENTITY_DISCONNECTED,
            schema_for!(EntityDisconnected<'static>),
        ),
        (
            crate::webhooks::ENDPOINT_DISABLED,
            schema_for!(crate::webhooks::announce::EndpointDisabled<'static>),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn schema_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/schemas")
    }

    /// The checked-in files are what the types generate: a change to a
    /// message type without its schema fails here.
    #[test]
    fn the_checked_in_schemas_are_the_generated_ones() {
        let update = std::env::var_os("UPDATE_SCHEMAS").is_some();
        for (name, schema) in schemas() {
            let path = schema_dir().join(format!("{name}.json"));
            let generated = format!(
                "{}\n",
                serde_json::to_string_pretty(&schema).expect("a schema is JSON")
            );
            if update {
                std::fs::create_dir_all(schema_dir()).expect("docs/schemas");
                std::fs::write(&path, &generated).expect("writing the schema");
                continue;
            }
            let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                checked_in == generated,
                "{} is not what the types generate; run `UPDATE_SCHEMAS=1 cargo test \
                 --lib contract` and review the change",
                path.display()
            );
        }
    }

    fn validator(name: &str) -> jsonschema::Validator {
        let (_, schema) = schemas()
            .into_iter()
            .find(|(each, _)| *each == name)
            .expect("a schema of that name");
        jsonschema::validator_for(&schema.to_value()).expect("a valid schema")
    }

    #[test]
    fn requests_of_every_scope_match_the_request_schema_and_ambiguous_ones_do_not() {
        use crate::domain::{DisconnectRequest, ReasonCode, Target};
        let validator = validator(REQUEST_TYPE);
        for target in Target::examples() {
            let request = DisconnectRequest {
                reason_code: Some(ReasonCode::Fraud),
                ..DisconnectRequest::for_target(target)
            };
            let body: serde_json::Value = serde_json::from_slice(&request.encode()).expect("JSON");
            assert!(validator.is_valid(&body), "{body}");
        }
        let id = "0190b3a5-8a2e-7cc0-8e0c-6f1f8d2b9a11";
        for invalid in [
            serde_json::json!({"request_id": id}),
            serde_json::json!({"request_id": id, "access_token": "t", "company_id": "C", "client_id": "a"}),
            serde_json::json!({"request_id": id, "scope": "client"}),
            serde_json::json!({"request_id": id, "company_id": "C", "client_id": "a"}),
            serde_json::json!({"request_id": id, "access_token": "t", "scope": "company"}),
            serde_json::json!({"request_id": id, "access_token": "t", "reason_code": "bored"}),
        ] {
            assert!(!validator.is_valid(&invalid), "{invalid}");
        }
    }

    /// The AsyncAPI document names every message type with its checked-in
    /// schema, and the CloudEvents attributes the events carry.
    #[test]
    fn the_asyncapi_document_covers_every_message_type() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/asyncapi.yaml");
        let document = std::fs::read_to_string(&path).expect("docs/asyncapi.yaml");
        assert!(document.starts_with("asyncapi: 3.0.0"));
        for (name, _) in schemas() {
            assert!(
                document.contains(&format!("$ref: './schemas/{name}.json'")),
                "{name} has no message in the AsyncAPI document"
            );
            assert!(document.contains(&format!("messageType: {name}")));
        }
        for attribute in ["specversion", "id", "type", "source", "time", "subject"] {
            assert!(document.contains(&format!("cloudEvents:{attribute}:")));
        }
        assert!(document.contains(crate::outbox::CLOUD_EVENTS_SOURCE));
    }
}
