//! Decoding a disconnect request from the bytes of a delivery.
//!
//! Every way a body can be bad maps to a [`Rejection`] whose text never
//! contains any part of the body: serde's own messages quote values (which may
//! be a token), so only field names and positions are reported.

use std::collections::HashSet;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use uuid::Uuid;

use super::{DisconnectRequest, MAX_REASON_CHARS, MAX_REQUESTED_BY_CHARS};
use crate::domain::entity::MAX_ENTITY_IDS;
use crate::domain::ids::{ConnectionId, EntityId, RequestId};
use crate::domain::rejection::{Rejection, RejectionCode};
use crate::domain::scope::{ClientId, CompanyId, ReasonCode, Scope, Target};
use crate::domain::token::AccessToken;

/// The request's own fields: the only keys a rejection may name.
const FIELDS: [&str; 11] = [
    "request_id",
    "access_token",
    "connection_id",
    "company_id",
    "client_id",
    "entity_ids",
    "scope",
    "reason_code",
    "requested_at",
    "requested_by",
    "reason",
];

/// The wire shape, every field optional so that a missing field and a field
/// of the wrong type are told apart by us rather than by serde's messages.
/// Unknown fields are ignored so producers can add fields first.
#[derive(Deserialize)]
struct WireRequest {
    request_id: Option<String>,
    access_token: Option<String>,
    connection_id: Option<String>,
    company_id: Option<String>,
    client_id: Option<String>,
    /// Checked by hand: its errors must name positions, never values.
    entity_ids: Option<serde_json::Value>,
    scope: Option<String>,
    reason_code: Option<String>,
    requested_at: Option<String>,
    requested_by: Option<String>,
    reason: Option<String>,
}

/// Content types accepted besides none at all: the registered JSON type, and
/// the older `text/json` some producers still send.
const JSON_CONTENT_TYPES: [&str; 2] = ["application/json", "text/json"];

impl DisconnectRequest {
    /// Decode a delivery body. `content_type` is the AMQP property, if set.
    pub fn decode(
        body: &[u8],
        content_type: Option<&str>,
        max_bytes: usize,
    ) -> Result<Self, Rejection> {
        if body.len() > max_bytes {
            return Err(Rejection::new(
                RejectionCode::TooLarge,
                format!("body is {} bytes, the limit is {max_bytes}", body.len()),
            ));
        }
        if let Some(content_type) = content_type {
            let essence = content_type.split(';').next().unwrap_or("").trim();
            if !JSON_CONTENT_TYPES
                .iter()
                .any(|accepted| essence.eq_ignore_ascii_case(accepted))
            {
                return Err(Rejection::new(
                    RejectionCode::WrongContentType,
                    "content type is not application/json",
                ));
            }
        }
        let text = std::str::from_utf8(body).map_err(|error| {
            Rejection::new(
                RejectionCode::NotUtf8,
                format!("body is not UTF-8 (byte {})", error.valid_up_to()),
            )
        })?;
        let value: serde_json::Value = serde_json::from_str(text).map_err(|error| {
            Rejection::new(
                RejectionCode::NotJson,
                format!(
                    "body is not JSON ({:?} error at line {}, column {})",
                    error.classify(),
                    error.line(),
                    error.column()
                ),
            )
        })?;
        if !value.is_object() {
            return Err(Rejection::new(
                RejectionCode::NotAnObject,
                "body is JSON but not an object",
            ));
        }
        refuse_repeated_keys(text)?;
        let wire: WireRequest = serde_path_to_error::deserialize(value)
            .map_err(|error| Rejection::invalid(&error.path().to_string(), "is not a string"))?;
        Self::from_wire(wire)
    }

    fn from_wire(wire: WireRequest) -> Result<Self, Rejection> {
        let request_id = required(wire.request_id, "request_id")?;
        let request_id = Uuid::parse_str(&request_id)
            .map(RequestId::from_uuid)
            .map_err(|_| Rejection::invalid("request_id", "is not a UUID"))?;
        let reason_code = wire
            .reason_code
            .map(|code| {
                ReasonCode::parse(&code).ok_or_else(|| {
                    Rejection::invalid(
                        "reason_code",
                        "is not one of user_request, employer_offboarded, customer_offboarded, \
                         credential_compromised, fraud, other",
                    )
                })
            })
            .transpose()?;
        let requested_at = wire
            .requested_at
            .map(|text| {
                DateTime::parse_from_rfc3339(&text)
                    .map(|at| at.with_timezone(&Utc))
                    .map_err(|_| Rejection::invalid("requested_at", "is not an RFC 3339 time"))
            })
            .transpose()?;
        let requested_by = bounded_text(wire.requested_by, "requested_by", MAX_REQUESTED_BY_CHARS)?;
        let reason = bounded_text(wire.reason, "reason", MAX_REASON_CHARS)?;
        let entity_ids = wire.entity_ids.map(entity_id_texts).transpose()?;
        let target = Selectors {
            access_token: wire.access_token,
            connection_id: wire.connection_id,
            company_id: wire.company_id,
            client_id: wire.client_id,
            entity_ids,
            scope: wire.scope,
        }
        .target()?;
        // A company or client request says when it was made: one replayed
        // after its audit record was purged is then refused as expired
        // instead of disconnecting what is active now.
        if target.fans_out() && requested_at.is_none() {
            return Err(Rejection::new(
                RejectionCode::MissingField,
                format!(
                    "field `requested_at` is required with scope {}",
                    target.scope().as_str()
                ),
            ));
        }
        Ok(Self {
            request_id,
            target,
            reason_code,
            requested_at,
            requested_by,
            reason,
            provenance: super::Provenance::default(),
        })
    }
}

/// The fields that say what a request disconnects, as given (in a message,
/// or on the `disconnect` command line).
#[derive(Debug, Default)]
pub struct Selectors {
    pub access_token: Option<String>,
    pub connection_id: Option<String>,
    pub company_id: Option<String>,
    pub client_id: Option<String>,
    pub entity_ids: Option<Vec<String>>,
    pub scope: Option<String>,
}

impl Selectors {
    /// Exactly one selector: `access_token` (scope `connection` by default,
    /// or `token`), `connection_id`, `company_id`, or none with scope
    /// `client`. Every selector but the token needs `client_id`. With
    /// `entity_ids` (scope `entity`), the token or the connection id names
    /// the connection whose entities those are.
    pub fn target(self) -> Result<Target, Rejection> {
        target(self)
    }
}

/// `entity_ids` as the body gives it: a list of strings, or it is refused.
fn entity_id_texts(value: serde_json::Value) -> Result<Vec<String>, Rejection> {
    let not_a_list = || Rejection::invalid("entity_ids", "is not a list of entity ids (strings)");
    let serde_json::Value::Array(items) = value else {
        return Err(not_a_list());
    };
    items
        .into_iter()
        .map(|item| match item {
            serde_json::Value::String(text) => Ok(text),
            _ => Err(not_a_list()),
        })
        .collect()
}

/// Entity ids: one at least, at most [`MAX_ENTITY_IDS`], each a UUID, none
/// twice. Errors name positions, never values.
fn entity_ids(texts: Vec<String>) -> Result<Vec<EntityId>, Rejection> {
    if texts.is_empty() {
        return Err(Rejection::invalid("entity_ids", "is empty"));
    }
    if texts.len() > MAX_ENTITY_IDS {
        return Err(Rejection::invalid(
            "entity_ids",
            &format!(
                "names {} entities, the limit is {MAX_ENTITY_IDS}",
                texts.len()
            ),
        ));
    }
    let mut ids = Vec::with_capacity(texts.len());
    let mut seen = HashSet::new();
    for (position, text) in texts.iter().enumerate() {
        let id = Uuid::parse_str(text)
            .map(EntityId::from_uuid)
            .map_err(|_| {
                Rejection::invalid(
                    "entity_ids",
                    &format!("holds a value that is not a UUID (position {position})"),
                )
            })?;
        if !seen.insert(id) {
            return Err(Rejection::invalid(
                "entity_ids",
                &format!("names an entity more than once (position {position})"),
            ));
        }
        ids.push(id);
    }
    Ok(ids)
}

fn target(selectors: Selectors) -> Result<Target, Rejection> {
    let scope = selectors
        .scope
        .map(|scope| {
            Scope::parse(&scope).ok_or_else(|| {
                Rejection::invalid(
                    "scope",
                    "is not one of token, connection, company, client, entity",
                )
            })
        })
        .transpose()?;
    let client_id = selectors
        .client_id
        .map(|client_id| {
            ClientId::parse(client_id).map_err(|what| Rejection::invalid("client_id", what))
        })
        .transpose()?;
    let needs_client = |client_id: Option<ClientId>| {
        client_id.ok_or_else(|| {
            Rejection::new(
                RejectionCode::MissingField,
                "field `client_id` is required with connection_id, company_id or scope client",
            )
        })
    };
    let given: Vec<&str> = [
        ("access_token", selectors.access_token.is_some()),
        ("connection_id", selectors.connection_id.is_some()),
        ("company_id", selectors.company_id.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, present)| present.then_some(name))
    .collect();
    if given.len() > 1 {
        return Err(Rejection::new(
            RejectionCode::InvalidSelector,
            format!(
                "fields {} cannot be combined: name one",
                given.join(" and ")
            ),
        ));
    }
    let mismatch = |selector: &str| {
        Rejection::new(
            RejectionCode::InvalidSelector,
            format!(
                "scope {} does not go with {selector}",
                scope.map_or("", Scope::as_str)
            ),
        )
    };
    if let Some(texts) = selectors.entity_ids {
        return entity_target(
            scope,
            selectors.access_token,
            selectors.connection_id,
            selectors.company_id.is_some(),
            client_id,
            entity_ids(texts)?,
        );
    }
    if scope == Some(Scope::Entity) {
        return Err(Rejection::new(
            RejectionCode::MissingField,
            "field `entity_ids` is required with scope entity",
        ));
    }
    if let Some(token) = selectors.access_token {
        let token = parse_token(token)?;
        return match scope {
            None | Some(Scope::Connection) => Ok(Target::ConnectionOfToken { token, client_id }),
            Some(Scope::Token) => Ok(Target::Token { token, client_id }),
            Some(_) => Err(mismatch("access_token")),
        };
    }
    if let Some(connection_id) = selectors.connection_id {
        let connection_id = parse_connection_id(&connection_id)?;
        return match scope {
            None | Some(Scope::Connection) => Ok(Target::Connection {
                client_id: needs_client(client_id)?,
                connection_id,
            }),
            Some(_) => Err(mismatch("connection_id")),
        };
    }
    if let Some(company_id) = selectors.company_id {
        let company_id =
            CompanyId::parse(company_id).map_err(|what| Rejection::invalid("company_id", what))?;
        return match scope {
            None | Some(Scope::Company) => Ok(Target::Company {
                client_id: needs_client(client_id)?,
                company_id,
            }),
            Some(_) => Err(mismatch("company_id")),
        };
    }
    match scope {
        Some(Scope::Client) => Ok(Target::Client {
            client_id: needs_client(client_id)?,
        }),
        Some(scope) => Err(Rejection::new(
            RejectionCode::InvalidSelector,
            format!("scope {} needs a selector", scope.as_str()),
        )),
        None => Err(Rejection::new(
            RejectionCode::MissingField,
            "field `access_token` is missing or null, and no other selector \
             (connection_id, company_id, scope client) is given",
        )),
    }
}

fn parse_token(text: String) -> Result<AccessToken, Rejection> {
    AccessToken::parse(text).map_err(|what| Rejection::invalid("access_token", what))
}

fn parse_connection_id(text: &str) -> Result<ConnectionId, Rejection> {
    Uuid::parse_str(text)
        .map(ConnectionId::from_uuid)
        .map_err(|_| Rejection::invalid("connection_id", "is not a UUID"))
}

/// The target of a request naming entities: those of the token's
/// connection, or of a connection by id (with `client_id`).
fn entity_target(
    scope: Option<Scope>,
    access_token: Option<String>,
    connection_id: Option<String>,
    company_id: bool,
    client_id: Option<ClientId>,
    entity_ids: Vec<EntityId>,
) -> Result<Target, Rejection> {
    if let Some(scope) = scope.filter(|scope| *scope != Scope::Entity) {
        return Err(Rejection::new(
            RejectionCode::InvalidSelector,
            format!("scope {} does not go with entity_ids", scope.as_str()),
        ));
    }
    if company_id {
        return Err(Rejection::new(
            RejectionCode::InvalidSelector,
            "entity_ids go with access_token or connection_id, not company_id",
        ));
    }
    if let Some(token) = access_token {
        let token = parse_token(token)?;
        return Ok(Target::EntitiesOfToken {
            token,
            client_id,
            entity_ids,
        });
    }
    let Some(connection_id) = connection_id else {
        return Err(Rejection::new(
            RejectionCode::MissingField,
            "field `access_token` or `connection_id` is required with entity_ids",
        ));
    };
    let connection_id = parse_connection_id(&connection_id)?;
    let client_id = client_id.ok_or_else(|| {
        Rejection::new(
            RejectionCode::MissingField,
            "field `client_id` is required with connection_id",
        )
    })?;
    Ok(Target::EntitiesOfConnection {
        client_id,
        connection_id,
        entity_ids,
    })
}

/// JSON allows an object to repeat a key, and parsers disagree on which value
/// wins: serde_json keeps the last, others the first. A component upstream
/// that checked one `access_token` while we revoked another would be a hole,
/// so a request whose top-level object repeats any key is refused. Only our
/// own field names are ever named; any other key is sender text.
fn refuse_repeated_keys(text: &str) -> Result<(), Rejection> {
    let keys: TopLevelKeys = serde_json::from_str(text)
        .map_err(|_| Rejection::new(RejectionCode::NotJson, "body is not a JSON object"))?;
    match keys.repeated {
        None => Ok(()),
        Some(key) => Err(Rejection::new(
            RejectionCode::DuplicateKey,
            match FIELDS.iter().find(|field| **field == key) {
                Some(field) => format!("field `{field}` appears more than once"),
                None => "a key that is not a request field appears more than once".into(),
            },
        )),
    }
}

/// The first key of a JSON object seen twice, if any; values are skipped.
struct TopLevelKeys {
    repeated: Option<String>,
}

impl<'de> Deserialize<'de> for TopLevelKeys {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(KeysVisitor)
    }
}

struct KeysVisitor;

impl<'de> Visitor<'de> for KeysVisitor {
    type Value = TopLevelKeys;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut seen = HashSet::new();
        let mut repeated = None;
        while let Some(key) = map.next_key::<String>()? {
            map.next_value::<IgnoredAny>()?;
            if repeated.is_none() && !seen.insert(key.clone()) {
                repeated = Some(key);
            }
        }
        Ok(TopLevelKeys { repeated })
    }
}

fn required(value: Option<String>, field: &str) -> Result<String, Rejection> {
    value.ok_or_else(|| {
        Rejection::new(
            RejectionCode::MissingField,
            format!("field `{field}` is missing or null"),
        )
    })
}

fn bounded_text(
    value: Option<String>,
    field: &str,
    max_chars: usize,
) -> Result<Option<String>, Rejection> {
    match value {
        Some(text) if text.chars().count() > max_chars => Err(Rejection::invalid(
            field,
            &format!("is longer than {max_chars} characters"),
        )),
        Some(text) if text.chars().any(char::is_control) => {
            Err(Rejection::invalid(field, "contains control characters"))
        }
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 16 * 1024;
    const TOKEN: &str = "dwt_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG";

    fn decode(body: &str) -> Result<DisconnectRequest, Rejection> {
        DisconnectRequest::decode(body.as_bytes(), None, LIMIT)
    }

    fn valid_body() -> String {
        format!(
            r#"{{"request_id":"0b6f7a52-8d0e-4c53-9d7e-3f4f0f3c1a77","access_token":"{TOKEN}","requested_at":"2026-11-24T10:15:00Z","requested_by":"ops@example.com","reason":"offboarding","extra":1}}"#
        )
    }

    #[test]
    fn a_complete_request_decodes_and_ignores_unknown_fields() {
        let request = decode(&valid_body()).expect("valid");
        assert_eq!(
            request.request_id.to_string(),
            "0b6f7a52-8d0e-4c53-9d7e-3f4f0f3c1a77"
        );
        assert_eq!(request.target.token().map(AccessToken::expose), Some(TOKEN));
        assert_eq!(request.requested_by.as_deref(), Some("ops@example.com"));
        assert_eq!(request.reason.as_deref(), Some("offboarding"));
        assert!(request.requested_at.is_some());
    }

    #[test]
    fn optional_fields_may_be_absent() {
        let body = format!(
            r#"{{"request_id":"0b6f7a52-8d0e-4c53-9d7e-3f4f0f3c1a77","access_token":"{TOKEN}"}}"#
        );
        let request = decode(&body).expect("valid");
        assert!(request.requested_at.is_none() && request.reason.is_none());
    }

    #[test]
    fn each_kind_of_bad_body_gets_its_own_code() {
        let id = "0b6f7a52-8d0e-4c53-9d7e-3f4f0f3c1a77";
        let cases = [
            ("not json".to_string(), RejectionCode::NotJson),
            ("[1,2]".to_string(), RejectionCode::NotAnObject),
            (
                format!(r#"{{"access_token":"{TOKEN}"}}"#),
                RejectionCode::MissingField,
            ),
            (
                format!(r#"{{"request_id":"{id}"}}"#),
                RejectionCode::MissingField,
            ),
            (
                format!(r#"{{"request_id":"nope","access_token":"{TOKEN}"}}"#),
                RejectionCode::InvalidField,
            ),
            (
                format!(r#"{{"request_id":7,"access_token":"{TOKEN}"}}"#),
                RejectionCode::InvalidField,
            ),
            (
                format!(r#"{{"request_id":"{id}","access_token":12345}}"#),
                RejectionCode::InvalidField,
            ),
            (
                format!(r#"{{"request_id":"{id}","access_token":"a\u0000b"}}"#),
                RejectionCode::InvalidField,
            ),
            (
                format!(
                    r#"{{"request_id":"{id}","access_token":"{TOKEN}","requested_at":"yesterday"}}"#
                ),
                RejectionCode::InvalidField,
            ),
            (
                format!(
                    r#"{{"request_id":"{id}","access_token":"{TOKEN}","reason":"{}"}}"#,
                    "x".repeat(MAX_REASON_CHARS + 1)
                ),
                RejectionCode::InvalidField,
            ),
            (
                format!("{}1{}", "[".repeat(200), "]".repeat(200)),
                RejectionCode::NotJson,
            ),
            (
                format!(r#"{{"request_id":"{id}","access_token":"x","access_token":"{TOKEN}"}}"#),
                RejectionCode::DuplicateKey,
            ),
        ];
        for (body, code) in cases {
            let rejection = decode(&body).expect_err(&body);
            assert_eq!(rejection.code, code, "{body}: {rejection}");
        }
    }

    #[test]
    fn a_repeated_key_is_refused_whichever_value_comes_first() {
        let id = "0b6f7a52-8d0e-4c53-9d7e-3f4f0f3c1a77";
        for body in [
            format!(
                r#"{{"request_id":"{id}","access_token":"dwt_unknown","access_token":"{TOKEN}"}}"#
            ),
            format!(
                r#"{{"request_id":"{id}","access_token":"{TOKEN}","access_token":"dwt_unknown"}}"#
            ),
        ] {
            let rejection = decode(&body).expect_err(&body);
            assert_eq!(rejection.code, RejectionCode::DuplicateKey);
            assert_eq!(
                rejection.detail,
                "field `access_token` appears more than once"
            );
            assert!(!rejection.to_string().contains("dwt_"), "{rejection}");
        }
        let body = format!(
            r#"{{"request_id":"{id}","access_token":"{TOKEN}","dwt_secret_key":1,"dwt_secret_key":2}}"#
        );
        let rejection = decode(&body).expect_err("repeated unknown key");
        assert_eq!(rejection.code, RejectionCode::DuplicateKey);
        assert!(!rejection.to_string().contains("dwt_secret"), "{rejection}");
        // The same key in a nested object is not the request's concern.
        let body =
            format!(r#"{{"request_id":"{id}","access_token":"{TOKEN}","extra":{{"a":1,"a":2}}}}"#);
        decode(&body).expect("a nested object is ignored");
    }

    #[test]
    fn exactly_one_selector_with_a_scope_that_fits_it() {
        let id = "0b6f7a52-8d0e-4c53-9d7e-3f4f0f3c1a77";
        let connection = "01a212d8-10af-770d-bd2e-3c10fb7f11a0";
        let at = r#""requested_at":"2026-11-24T10:15:00Z""#;
        let accepted = [
            (
                format!(r#"{{"request_id":"{id}","access_token":"{TOKEN}"}}"#),
                Scope::Connection,
            ),
            (
                format!(r#"{{"request_id":"{id}","access_token":"{TOKEN}","scope":"token"}}"#),
                Scope::Token,
            ),
            (
                format!(
                    r#"{{"request_id":"{id}","connection_id":"{connection}","client_id":"app"}}"#
                ),
                Scope::Connection,
            ),
            (
                format!(r#"{{"request_id":"{id}","company_id":"C","client_id":"app",{at}}}"#),
                Scope::Company,
            ),
            (
                format!(r#"{{"request_id":"{id}","scope":"client","client_id":"app",{at}}}"#),
                Scope::Client,
            ),
        ];
        for (body, scope) in accepted {
            assert_eq!(decode(&body).expect(&body).target.scope(), scope, "{body}");
        }
        let refused = [
            (
                format!(r#"{{"request_id":"{id}","client_id":"app"}}"#),
                RejectionCode::MissingField,
            ),
            (
                format!(
                    r#"{{"request_id":"{id}","access_token":"{TOKEN}","company_id":"C","client_id":"app"}}"#
                ),
                RejectionCode::InvalidSelector,
            ),
            (
                format!(
                    r#"{{"request_id":"{id}","company_id":"C","scope":"token","client_id":"app",{at}}}"#
                ),
                RejectionCode::InvalidSelector,
            ),
            (
                format!(r#"{{"request_id":"{id}","scope":"company","client_id":"app",{at}}}"#),
                RejectionCode::InvalidSelector,
            ),
            (
                format!(r#"{{"request_id":"{id}","access_token":"{TOKEN}","scope":"everything"}}"#),
                RejectionCode::InvalidField,
            ),
            (
                format!(r#"{{"request_id":"{id}","company_id":"C",{at}}}"#),
                RejectionCode::MissingField,
            ),
            (
                format!(r#"{{"request_id":"{id}","scope":"client","client_id":"app"}}"#),
                RejectionCode::MissingField,
            ),
            (
                format!(r#"{{"request_id":"{id}","connection_id":"nope","client_id":"app"}}"#),
                RejectionCode::InvalidField,
            ),
            (
                format!(
                    r#"{{"request_id":"{id}","access_token":"{TOKEN}","reason_code":"boredom"}}"#
                ),
                RejectionCode::InvalidField,
            ),
        ];
        for (body, code) in refused {
            assert_eq!(decode(&body).expect_err(&body).code, code, "{body}");
        }
    }

    #[test]
    fn entity_ids_name_entities_of_a_token_s_or_a_connection_s_connection() {
        let id = "0b6f7a52-8d0e-4c53-9d7e-3f4f0f3c1a77";
        let connection = "01a212d8-10af-770d-bd2e-3c10fb7f11a0";
        let (e1, e2) = (
            "01a212d8-10af-770d-bd2e-3c10fb7f11a1",
            "01a212d8-10af-770d-bd2e-3c10fb7f11a2",
        );
        let by_token = decode(&format!(
            r#"{{"request_id":"{id}","access_token":"{TOKEN}","entity_ids":["{e1}","{e2}"]}}"#
        ))
        .expect("valid");
        assert_eq!(by_token.target.scope(), Scope::Entity);
        assert_eq!(by_token.target.entity_ids().map(<[_]>::len), Some(2));
        let by_id = decode(&format!(
            r#"{{"request_id":"{id}","connection_id":"{connection}","client_id":"app","scope":"entity","entity_ids":["{e1}"]}}"#
        ))
        .expect("valid");
        assert!(matches!(by_id.target, Target::EntitiesOfConnection { .. }));
        let many: Vec<String> = (0..=MAX_ENTITY_IDS)
            .map(|_| format!("\"{}\"", Uuid::new_v4()))
            .collect();
        let refused = [
            (
                r#""entity_ids":[]"#.to_string(),
                RejectionCode::InvalidField,
                "is empty",
            ),
            (
                format!(r#""entity_ids":[{}]"#, many.join(",")),
                RejectionCode::InvalidField,
                "the limit is 100",
            ),
            (
                format!(r#""entity_ids":["{e1}","{e2}","{e1}"]"#),
                RejectionCode::InvalidField,
                "more than once (position 2)",
            ),
            (
                format!(r#""entity_ids":["{e1}","division-a"]"#),
                RejectionCode::InvalidField,
                "not a UUID (position 1)",
            ),
            (
                format!(r#""entity_ids":"{e1}""#),
                RejectionCode::InvalidField,
                "not a list",
            ),
            (
                format!(r#""entity_ids":["{e1}"],"scope":"token""#),
                RejectionCode::InvalidSelector,
                "scope token does not go with entity_ids",
            ),
            (
                r#""scope":"entity""#.to_string(),
                RejectionCode::MissingField,
                "entity_ids",
            ),
        ];
        for (fields, code, says) in refused {
            let body = format!(r#"{{"request_id":"{id}","access_token":"{TOKEN}",{fields}}}"#);
            let rejection = decode(&body).expect_err(&body);
            assert_eq!(rejection.code, code, "{body}");
            assert!(rejection.detail.contains(says), "{}", rejection.detail);
            assert!(
                !rejection.detail.contains("division-a"),
                "{}",
                rejection.detail
            );
        }
        for body in [
            format!(
                r#"{{"request_id":"{id}","company_id":"C","client_id":"app","entity_ids":["{e1}"]}}"#
            ),
            format!(
                r#"{{"request_id":"{id}","scope":"client","client_id":"app","entity_ids":["{e1}"]}}"#
            ),
        ] {
            assert_eq!(
                decode(&body).expect_err(&body).code,
                RejectionCode::InvalidSelector,
                "{body}"
            );
        }
        let no_client = format!(
            r#"{{"request_id":"{id}","connection_id":"{connection}","entity_ids":["{e1}"]}}"#
        );
        assert_eq!(
            decode(&no_client).expect_err(&no_client).code,
            RejectionCode::MissingField
        );
    }

    #[test]
    fn a_body_over_the_limit_is_rejected_before_parsing() {
        let rejection = DisconnectRequest::decode(&[b' '; 100], None, 99).expect_err("too large");
        assert_eq!(rejection.code, RejectionCode::TooLarge);
    }

    #[test]
    fn invalid_utf8_and_foreign_content_types_are_rejected() {
        let rejection = DisconnectRequest::decode(&[0xff, 0xfe], None, LIMIT).expect_err("utf8");
        assert_eq!(rejection.code, RejectionCode::NotUtf8);
        let body = valid_body();
        let rejection = DisconnectRequest::decode(body.as_bytes(), Some("text/plain"), LIMIT)
            .expect_err("content type");
        assert_eq!(rejection.code, RejectionCode::WrongContentType);
        DisconnectRequest::decode(
            body.as_bytes(),
            Some("application/json; charset=utf-8"),
            LIMIT,
        )
        .expect("json with charset is fine");
    }

    #[test]
    fn rejections_never_quote_the_body() {
        let secret = "dwt_SECRETSECRETSECRET";
        let bodies = [
            format!(r#"{{"request_id":"{secret}","access_token":"{secret}"}}"#),
            format!(r#"{{"request_id":["{secret}"],"access_token":"x"}}"#),
            format!(
                r#"{{"request_id":"0b6f7a52-8d0e-4c53-9d7e-3f4f0f3c1a77","access_token":["{secret}"]}}"#
            ),
            format!(
                r#"{{"request_id":"0b6f7a52-8d0e-4c53-9d7e-3f4f0f3c1a77","access_token":"{secret}\n"}}"#
            ),
            format!(r#"{{"{secret}": tru"#),
        ];
        for body in bodies {
            let rejection = decode(&body).expect_err(&body);
            assert!(!rejection.to_string().contains("SECRET"), "{rejection}");
        }
    }
}

/// The decoder's fuzz target. cargo-fuzz needs a nightly toolchain, which
/// this project's machines do not have; proptest runs on stable, in every
/// test run, and shrinks what it finds.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    const LIMIT: usize = 16 * 1024;

    /// JSON values up to a few levels deep, with keys the decoder knows.
    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(serde_json::Value::from),
            ".{0,64}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("request_id".to_string()),
                        Just("access_token".to_string()),
                        Just("requested_at".to_string()),
                        Just("requested_by".to_string()),
                        Just("reason".to_string()),
                        Just("scope".to_string()),
                        Just("client_id".to_string()),
                        ".{0,8}",
                    ],
                    inner,
                    0..6
                )
                .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512),
                                       content_type in prop::option::of(".{0,32}")) {
            let _ = DisconnectRequest::decode(&body, content_type.as_deref(), LIMIT);
        }

        #[test]
        fn arbitrary_json_never_panics_and_rejections_never_quote_strings(value in json_value()) {
            let body = serde_json::to_vec(&value).unwrap_or_default();
            if let Err(rejection) = DisconnectRequest::decode(&body, None, LIMIT) {
                let text = rejection.to_string();
                let mut strings = Vec::new();
                collect_strings(&value, &mut strings);
                // Our own field names may be named; nothing the sender wrote may.
                for string in strings.iter().filter(|s| s.len() >= 8 && !FIELDS.contains(&s.as_str())) {
                    prop_assert!(!text.contains(string.as_str()), "{text} quotes {string}");
                }
            }
        }

        #[test]
        fn well_formed_requests_with_any_token_text_decode_or_are_rejected_cleanly(token in ".{0,600}") {
            let body = serde_json::json!({
                "request_id": "0b6f7a52-8d0e-4c53-9d7e-3f4f0f3c1a77",
                "access_token": token,
            });
            let body = serde_json::to_vec(&body).unwrap_or_default();
            match DisconnectRequest::decode(&body, Some("application/json"), LIMIT) {
                Ok(request) => prop_assert_eq!(request.target.token().map(AccessToken::expose), Some(token.as_str())),
                Err(rejection) => prop_assert_eq!(rejection.code, RejectionCode::InvalidField),
            }
        }
    }

    fn collect_strings(value: &serde_json::Value, into: &mut Vec<String>) {
        match value {
            serde_json::Value::String(text) => into.push(text.clone()),
            serde_json::Value::Array(items) => {
                items.iter().for_each(|item| collect_strings(item, into))
            }
            serde_json::Value::Object(map) => map.iter().for_each(|(key, item)| {
                into.push(key.clone());
                collect_strings(item, into);
            }),
            _ => {}
        }
    }
}
