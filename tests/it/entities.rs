//! Entities of a connection, end to end through RabbitMQ and Postgres:
//! disconnecting some keeps the connection, its tokens and the others;
//! re-authenticating brings one back to the same connection; every
//! rejection changes nothing; a full disconnect ends them all; and the
//! races with full disconnects, other entity requests and token issuing
//! have exact outcomes.

use disconnect_worker::domain::{
    DisconnectRequest, EntityId, IssuedToken, Outcome, OutcomeKind, ReasonCode,
};
use disconnect_worker::outbox::OutboxFormat;
use disconnect_worker::service::{self, Policy, Processed};
use lapin::BasicProperties;
use uuid::Uuid;

use crate::support::entities::{
    entities_of_connection, entities_of_token, entity_ids, ids, named_entities,
};
use crate::support::scopes::{company_request, with_reason, BROKER_USER};
use crate::support::TestContext;

const APP: &str = "app-a";

/// A token for company C's connection at gusto, issued for user-a with
/// these provider entities, and the platform's ids of those entities in
/// the same order.
async fn issue_to_c(
    test: &TestContext,
    provider_entities: &[&str],
) -> (IssuedToken, Vec<EntityId>) {
    let issued = test
        .issue_with_entities(APP, "C", "gusto", "user-a", provider_entities)
        .await;
    let entities = entity_ids(&issued, provider_entities);
    (issued, entities)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnecting_named_entities_keeps_the_connection_its_tokens_and_the_other_entities() {
    let test = TestContext::new().await;
    let (first, entities) = issue_to_c(&test, &["ein-1", "ein-2", "ein-3"]).await;
    let second = test.issue(APP, "C", "gusto", "user-b").await;
    assert_eq!(first.connection_id, second.connection_id);
    let (mut events, _worker, channel) = test.running().await;

    let request = with_reason(
        entities_of_token(&second.token, &entities[..2]),
        ReasonCode::UserRequest,
    );
    let request_id = test.publish_request(&channel, &request, None).await;
    events.wait_for_count(2).await;

    let mine = events.for_request(request_id);
    assert_eq!(mine.len(), 2, "one event per entity");
    let mut named = Vec::new();
    for event in &mine {
        assert_eq!(event.routing_key, "connection.entity_disconnected");
        assert_eq!(event.json["connection_id"], first.connection_id.to_string());
        assert_eq!(event.json["disconnected_entities"], 2);
        assert_eq!(event.json["reason_code"], "user_request");
        assert_eq!(event.json["scope"], "entity");
        assert_eq!(
            event.header("cloudEvents:type").as_deref(),
            Some("connection.entity_disconnected")
        );
        assert_eq!(
            event.header("cloudEvents:subject"),
            Some(first.connection_id.to_string())
        );
        named.push((
            event.json["entity_id"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            event.json["provider_entity_id"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        ));
    }
    named.sort();
    let mut expected = vec![
        (entities[0].to_string(), "ein-1".to_string()),
        (entities[1].to_string(), "ein-2".to_string()),
    ];
    expected.sort();
    assert_eq!(named, expected);
    for entity in &entities[..2] {
        let state = test.entity_state(*entity).await;
        assert_eq!(state.status, "disconnected");
        assert_eq!(state.disconnected_by_request, Some(request_id));
    }
    assert_eq!(test.entity_state(entities[2]).await.status, "active");
    assert!(test.is_active(&first).await && test.is_active(&second).await);
    assert_eq!(test.connection_status(first.connection_id).await, "active");
    let audit = test.audit_row(request_id).await.expect("audit row");
    assert_eq!(
        (audit.outcome.as_str(), audit.scope.as_str()),
        ("entities_disconnected", "entity")
    );
    let introspected = test.introspect(&first.token).await;
    let details = introspected.details.expect("details");
    assert_eq!(details.entities.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_authenticating_with_a_disconnected_entity_brings_it_back_to_the_same_connection() {
    let test = TestContext::new().await;
    let (issued, entities) = issue_to_c(&test, &["ein-1", "ein-2"]).await;
    let (mut events, _worker, channel) = test.running().await;
    let request = entities_of_token(&issued.token, &entities[..1]);
    let request_id = test.publish_request(&channel, &request, None).await;
    events.event_for(request_id).await;
    assert_eq!(test.entity_state(entities[0]).await.status, "disconnected");

    let again = test
        .issue_with_entities(APP, "C", "gusto", "user-a", &["ein-1", "ein-9"])
        .await;

    assert_eq!(
        again.connection_id, issued.connection_id,
        "the same connection"
    );
    let back = test.entity_state(entities[0]).await;
    assert_eq!(
        (back.status.as_str(), back.disconnected_by_request),
        ("active", None)
    );
    assert_eq!(entity_ids(&again, &["ein-1"]), entities[..1], "the same id");
    let added = entity_ids(&again, &["ein-9"]);
    assert_eq!(test.entity_state(added[0]).await.status, "active");
    assert_eq!(again.entities.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rejection_of_an_entity_request_changes_nothing_and_says_why() {
    let test = TestContext::new().await;
    let (issued, entities) = issue_to_c(&test, &["ein-1", "ein-2"]).await;
    let elsewhere = test
        .issue_with_entities(APP, "D", "gusto", "user-a", &["ein-1", "ein-2"])
        .await;
    let foreign = entity_ids(&elsewhere, &["ein-1"])[0];
    let stranger = EntityId::from_uuid(Uuid::new_v4());
    let (mut events, _worker, channel) = test.running().await;

    let cases: Vec<(DisconnectRequest, Option<&str>, &str, Vec<EntityId>)> = vec![
        (
            entities_of_token(&issued.token, &[entities[0], foreign, stranger]),
            None,
            "unknown_entity",
            vec![foreign, stranger],
        ),
        (
            entities_of_token(&issued.token, &entities),
            None,
            "would_disconnect_connection",
            vec![],
        ),
        (
            entities_of_connection(APP, issued.connection_id, &entities[..1]),
            None,
            "not_authorized",
            vec![],
        ),
        (
            entities_of_connection("app-b", issued.connection_id, &entities[..1]),
            Some(BROKER_USER),
            "unknown_connection",
            vec![],
        ),
    ];
    for (request, user, reason, about) in cases {
        let request_id = test.publish_request(&channel, &request, user).await;
        let event = events.event_for(request_id).await;
        assert_eq!(
            event.routing_key, "connection.disconnect_rejected",
            "{reason}"
        );
        assert_eq!(event.json["reason"], reason);
        assert_eq!(event.json["scope"], "entity");
        let listed: Vec<String> = event.json["entity_ids"]
            .as_array()
            .map(|ids| {
                ids.iter()
                    .filter_map(|id| id.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let mut about: Vec<String> = about.iter().map(ToString::to_string).collect();
        about.sort();
        let mut listed_sorted = listed.clone();
        listed_sorted.sort();
        assert_eq!(listed_sorted, about, "{reason}");
        assert_eq!(test.outcome_of(request_id).await.as_deref(), Some(reason));
    }
    for entity in &entities {
        assert_eq!(
            test.entity_state(*entity).await.status,
            "active",
            "nothing changed"
        );
    }
    assert!(test.is_active(&issued).await);

    // Already disconnected: an entity, then the whole connection.
    let first = entities_of_token(&issued.token, &entities[..1]);
    let first_id = test.publish_request(&channel, &first, None).await;
    events.event_for(first_id).await;
    let again = entities_of_token(&issued.token, &entities[..1]);
    let again_id = test.publish_request(&channel, &again, None).await;
    let event = events.event_for(again_id).await;
    assert_eq!(event.json["reason"], "entities_already_disconnected");
    assert_eq!(event.json["entity_ids"][0], entities[0].to_string());
    let whole = DisconnectRequest::new(issued.token.clone());
    let whole_id = test.publish_request(&channel, &whole, None).await;
    events.event_for(whole_id).await;
    let after = entities_of_token(&issued.token, &entities[1..]);
    let after_id = test.publish_request(&channel, &after, None).await;
    let event = events.event_for(after_id).await;
    assert_eq!(event.json["reason"], "already_disconnected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entities_of_a_connection_by_id_are_authorized_by_the_publisher() {
    let test = TestContext::new().await;
    let (issued, entities) = issue_to_c(&test, &["ein-1", "ein-2"]).await;
    let (mut events, _worker, channel) = test.running().await;

    let request = entities_of_connection(APP, issued.connection_id, &entities[1..]);
    let request_id = test
        .publish_request(&channel, &request, Some(BROKER_USER))
        .await;
    let event = events.event_for(request_id).await;

    assert_eq!(event.routing_key, "connection.entity_disconnected");
    assert_eq!(event.json["entity_id"], entities[1].to_string());
    let audit = test.audit_row(request_id).await.expect("audit row");
    assert_eq!(audit.publisher.as_deref(), Some(BROKER_USER));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disconnect_ends_the_active_entities_and_lists_them_and_so_does_a_fan_out() {
    let test = TestContext::new().await;
    let (issued, entities) = issue_to_c(&test, &["ein-1", "ein-2", "ein-3"]).await;
    let other = test
        .issue_with_entities(APP, "D", "justworks", "user-a", &["div-a", "div-b"])
        .await;
    let (mut events, _worker, channel) = test.running().await;
    let alone = entities_of_token(&issued.token, &entities[..1]);
    let alone_id = test.publish_request(&channel, &alone, None).await;
    events.event_for(alone_id).await;

    let whole = DisconnectRequest::new(issued.token.clone());
    let whole_id = test.publish_request(&channel, &whole, None).await;
    let event = events.event_for(whole_id).await;

    assert_eq!(event.routing_key, "connection.disconnected");
    let mut listed = named_entities(&event.json);
    listed.sort();
    let mut expected: Vec<String> = entities[1..].iter().map(ToString::to_string).collect();
    expected.sort();
    assert_eq!(
        listed, expected,
        "the active ones, not the one ended before"
    );
    assert_eq!(
        test.entity_state(entities[0]).await.disconnected_by_request,
        Some(alone_id)
    );
    for entity in &entities[1..] {
        let state = test.entity_state(*entity).await;
        assert_eq!(state.status, "disconnected");
        assert_eq!(state.disconnected_by_request, Some(whole_id));
    }

    // A company's fan-out ends its connections' entities too.
    let company = company_request(APP, "D");
    let company_id = test
        .publish_request(&channel, &company, Some(BROKER_USER))
        .await;
    let wanted = company_id.to_string();
    let connection_event = loop {
        let event = events
            .next_within(crate::support::PATIENCE)
            .await
            .expect("the fan-out's events");
        if event.request_id() == wanted && event.routing_key == "connection.disconnected" {
            break event;
        }
    };
    assert_eq!(named_entities(&connection_event.json).len(), 2);
    for entity in entity_ids(&other, &["div-a", "div-b"]) {
        let state = test.entity_state(entity).await;
        assert_eq!(
            (state.status.as_str(), state.disconnected_by_request),
            ("disconnected", Some(company_id))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_entity_lists_are_dead_lettered_with_their_codes_and_the_next_request_succeeds() {
    let test = TestContext::new().await;
    let (issued, entities) = issue_to_c(&test, &["ein-1", "ein-2"]).await;
    let (mut events, _worker, channel) = test.running().await;
    let token = issued.token.expose();
    let id = || Uuid::new_v4();
    let e = entities[0];
    let many: Vec<String> = (0..101)
        .map(|_| format!("\"{}\"", Uuid::new_v4()))
        .collect();
    let bodies = [
        (
            format!(
                r#"{{"request_id":"{}","access_token":"{token}","entity_ids":[]}}"#,
                id()
            ),
            "invalid_field",
        ),
        (
            format!(
                r#"{{"request_id":"{}","access_token":"{token}","entity_ids":[{}]}}"#,
                id(),
                many.join(",")
            ),
            "invalid_field",
        ),
        (
            format!(
                r#"{{"request_id":"{}","access_token":"{token}","entity_ids":["{e}","{e}"]}}"#,
                id()
            ),
            "invalid_field",
        ),
        (
            format!(
                r#"{{"request_id":"{}","access_token":"{token}","entity_ids":["ein-1"]}}"#,
                id()
            ),
            "invalid_field",
        ),
        (
            format!(
                r#"{{"request_id":"{}","company_id":"C","client_id":"{APP}","entity_ids":["{e}"]}}"#,
                id()
            ),
            "invalid_selector",
        ),
        (
            format!(
                r#"{{"request_id":"{}","access_token":"{token}","scope":"entity"}}"#,
                id()
            ),
            "missing_field",
        ),
    ];
    let properties = BasicProperties::default()
        .with_content_type(lapin::types::ShortString::from("application/json"));
    for (body, _) in &bodies {
        test.publish_raw(&channel, body.as_bytes(), properties.clone())
            .await;
    }
    let letters = test.wait_for_dead_letters(bodies.len()).await;
    let mut codes: Vec<String> = letters
        .iter()
        .map(|letter| letter.code.clone().unwrap_or_default())
        .collect();
    codes.sort();
    let mut expected: Vec<String> = bodies.iter().map(|(_, code)| code.to_string()).collect();
    expected.sort();
    assert_eq!(codes, expected);
    for letter in &letters {
        let reason = letter.reason.clone().unwrap_or_default();
        assert!(
            !reason.contains(token) && !reason.contains("ein-1"),
            "{reason}"
        );
    }

    let good = test
        .publish_request(
            &channel,
            &entities_of_token(&issued.token, &entities[..1]),
            None,
        )
        .await;
    assert_eq!(
        events.event_for(good).await.routing_key,
        "connection.entity_disconnected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_entity_request_changes_nothing_and_publishes_nothing_new() {
    let test = TestContext::new().await;
    let (issued, entities) = issue_to_c(&test, &["ein-1", "ein-2", "ein-3"]).await;
    let (mut events, _worker, channel) = test.running().await;
    let request = entities_of_token(&issued.token, &entities[..2]);
    let request_id = test.publish_request(&channel, &request, None).await;
    events.wait_for_count(2).await;
    // Re-authenticated in between: a replay must not disconnect it again.
    test.issue_with_entities(APP, "C", "gusto", "user-a", &["ein-1"])
        .await;

    test.publish_request(&channel, &request, None).await;
    let marker = test
        .publish_request(
            &channel,
            &DisconnectRequest::new(issued.token.clone()),
            None,
        )
        .await;
    events.event_for(marker).await;

    assert_eq!(events.for_request(request_id).len(), 2, "nothing new");
    let audit = test.audit_row(request_id).await.expect("audit row");
    assert_eq!(audit.outcome, "entities_disconnected");
    assert_eq!(
        test.entity_state(entities[0]).await.disconnected_by_request,
        Some(marker),
        "re-activated, then ended with the connection, not by the replay"
    );
}

/// The outcome a request recorded, straight from the service.
fn outcome(processed: Processed) -> Outcome {
    match processed {
        Processed::Recorded(outcome) => outcome,
        Processed::AlreadyProcessed(kind) => panic!("a duplicate: {kind:?}"),
    }
}

/// Two entity requests for the two entities of a connection, and a full
/// disconnect, all at once on three transactions, round after round: never
/// both entity requests succeed (that would leave no entity), every entity
/// ends disconnected by the one request whose outcome names it, and the
/// full disconnect lists exactly the entities still active when it ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entity_requests_racing_each_other_and_a_full_disconnect_have_exact_outcomes() {
    let test = TestContext::new().await;
    let policy = Policy::default();
    for round in 0..20 {
        let issued = test
            .issue_with_entities(APP, &format!("C{round}"), "gusto", "user-a", &["e1", "e2"])
            .await;
        let entities = entity_ids(&issued, &["e1", "e2"]);
        let first = entities_of_token(&issued.token, &entities[..1]);
        let second = entities_of_token(&issued.token, &entities[1..]);
        let whole = DisconnectRequest::new(issued.token.clone());
        let run = |request: DisconnectRequest| {
            let pool = test.pool.clone();
            let policy = policy.clone();
            async move {
                let mut conn = pool.get().await.expect("db");
                outcome(
                    service::record_disconnect(
                        &mut conn,
                        &request,
                        &policy,
                        OutboxFormat::ByReference,
                    )
                    .await
                    .expect("recorded"),
                )
            }
        };
        let (a, b, c) = tokio::join!(run(first.clone()), run(second.clone()), run(whole.clone()));

        let ok = |outcome: &Outcome| outcome.kind() == OutcomeKind::EntitiesDisconnected;
        assert!(!(ok(&a) && ok(&b)), "round {round}: {a:?} {b:?}");
        let Outcome::Disconnected { ended_entities, .. } = &c else {
            panic!("round {round}: the full disconnect: {c:?}");
        };
        for (index, entity) in entities.iter().enumerate() {
            let state = test.entity_state(*entity).await;
            assert_eq!(state.status, "disconnected", "round {round}");
            let by = state.disconnected_by_request.expect("by a request");
            let (by_request, named) = if by == whole.request_id.as_uuid() {
                (&c, ids(ended_entities))
            } else if by == first.request_id.as_uuid() {
                (&a, ids(a.disconnected_entities()))
            } else {
                assert_eq!(by, second.request_id.as_uuid(), "round {round}");
                (&b, ids(b.disconnected_entities()))
            };
            assert!(
                named.contains(entity),
                "round {round}: entity {index} ended by {by_request:?}, which does not name it"
            );
        }
        for other in [&a, &b] {
            assert!(
                matches!(
                    other.kind(),
                    OutcomeKind::EntitiesDisconnected
                        | OutcomeKind::WouldDisconnectConnection
                        | OutcomeKind::AlreadyDisconnected
                ),
                "round {round}: {other:?}"
            );
        }
    }
}

/// An entity request racing the re-authentication that re-activates
/// another entity of the connection: either order, an exact outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entity_request_racing_a_re_authentication_has_an_exact_outcome() {
    let test = TestContext::new().await;
    let policy = Policy::default();
    for round in 0..20 {
        let company = format!("C{round}");
        let issued = test
            .issue_with_entities(APP, &company, "gusto", "user-a", &["e1", "e2"])
            .await;
        let entities = entity_ids(&issued, &["e1", "e2"]);
        let mut conn = test.pool.get().await.expect("db");
        let gone = service::record_disconnect(
            &mut conn,
            &entities_of_token(&issued.token, &entities[..1]),
            &policy,
            OutboxFormat::ByReference,
        )
        .await
        .expect("recorded");
        assert_eq!(gone.kind(), Some(OutcomeKind::EntitiesDisconnected));
        drop(conn);

        let request = entities_of_token(&issued.token, &entities[1..]);
        let pool = test.pool.clone();
        let policy = policy.clone();
        let (decided, reissued) = tokio::join!(
            async move {
                let mut conn = pool.get().await.expect("db");
                outcome(
                    service::record_disconnect(
                        &mut conn,
                        &request,
                        &policy,
                        OutboxFormat::ByReference,
                    )
                    .await
                    .expect("recorded"),
                )
            },
            test.issue_with_entities(APP, &company, "gusto", "user-b", &["e1"]),
        );

        assert_eq!(reissued.connection_id, issued.connection_id);
        assert_eq!(test.entity_state(entities[0]).await.status, "active");
        let second = test.entity_state(entities[1]).await;
        match decided.kind() {
            // The re-authentication came first: e1 was active again.
            OutcomeKind::EntitiesDisconnected => assert_eq!(second.status, "disconnected"),
            // It came after: e2 was the last active entity.
            OutcomeKind::WouldDisconnectConnection => assert_eq!(second.status, "active"),
            other => panic!("round {round}: {other:?}"),
        }
    }
}
