//! Requests at every scope, end to end through the worker: a token alone, a
//! connection by id, a company, a whole application; who may ask for each;
//! what each leaves untouched; and the events each produces.

use disconnect_worker::domain::{
    AccessToken, Authorizations, DisconnectRequest, ReasonCode, Target,
};
use uuid::Uuid;

use crate::support::broker::{EventTap, ReceivedEvent};
use crate::support::scopes::{
    client_request, company_request, connection_request, with_reason, BROKER_USER,
};
use crate::support::{RunningWorker, TestContext};

const APP: &str = "app-a";
const OTHER_APP: &str = "app-b";

fn revoke_alone(token: &AccessToken) -> DisconnectRequest {
    DisconnectRequest::for_target(Target::Token {
        token: token.clone(),
        client_id: None,
    })
}

/// A worker that lets the test broker's user ask for `grants` (as
/// AUTHORIZED_PUBLISHERS says it).
fn worker_granting(test: &TestContext, grants: &str) -> RunningWorker {
    let mut settings = test.run_settings();
    settings.scopes.authorizations =
        Authorizations::parse("AUTHORIZED_PUBLISHERS", grants).expect("valid grants");
    RunningWorker::spawn(settings)
}

/// The ids in an event's `revoked_token_ids`.
fn revoked_ids(event: &ReceivedEvent) -> Vec<String> {
    let mut ids: Vec<String> = event.json["revoked_token_ids"]
        .as_array()
        .expect("revoked_token_ids")
        .iter()
        .map(|id| id.as_str().unwrap_or_default().to_string())
        .collect();
    ids.sort();
    ids
}

/// Wait for a fan-out's terminal event and return every event of the
/// request, in arrival order.
async fn events_until_terminal(events: &mut EventTap, request_id: Uuid) -> Vec<ReceivedEvent> {
    let deadline = tokio::time::Instant::now() + crate::support::PATIENCE;
    let wanted = request_id.to_string();
    loop {
        let done = events.received.iter().any(|event| {
            event.request_id() == wanted
                && matches!(
                    event.routing_key.as_str(),
                    "disconnect.completed" | "connection.disconnect_rejected"
                )
        });
        if done {
            return events
                .received
                .iter()
                .filter(|event| event.request_id() == wanted)
                .cloned()
                .collect();
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if events.next_within(left).await.is_none() {
            panic!("no terminal event for {wanted}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_alone_leaves_its_connection_and_its_siblings_working() {
    let test = TestContext::new().await;
    let user_a = test.issue(APP, "company-c", "gusto", "user-a").await;
    let user_b = test.issue(APP, "company-c", "gusto", "user-b").await;
    let (mut events, _worker, channel) = test.running().await;

    let request = with_reason(
        revoke_alone(&user_a.token),
        ReasonCode::CredentialCompromised,
    );
    let request_id = test.publish_request(&channel, &request, None).await;
    let event = events.event_for(request_id).await;

    assert_eq!(event.routing_key, "token.revoked");
    assert_eq!(event.json["token_id"], user_a.token_id.to_string());
    assert_eq!(
        event.json["connection_id"],
        user_a.connection_id.to_string()
    );
    assert_eq!(
        (
            &event.json["client_id"],
            &event.json["company_id"],
            &event.json["provider_id"]
        ),
        (&APP.into(), &"company-c".into(), &"gusto".into())
    );
    assert_eq!(event.json["reason_code"], "credential_compromised");
    assert!(!test.is_active(&user_a).await, "the token is revoked");
    assert!(test.is_active(&user_b).await, "its sibling still works");
    assert_eq!(
        test.connection_status(user_a.connection_id).await,
        "active",
        "the employer stays connected"
    );

    // CloudEvents 1.0, binary mode: the attributes as application
    // properties, the body unchanged.
    assert_eq!(
        event.header("cloudEvents:specversion").as_deref(),
        Some("1.0")
    );
    assert_eq!(
        event.header("cloudEvents:id"),
        event.json["event_id"].as_str().map(str::to_string)
    );
    assert_eq!(
        event.header("cloudEvents:type").as_deref(),
        Some("token.revoked")
    );
    assert_eq!(
        event.header("cloudEvents:source").as_deref(),
        Some("/disconnect-worker")
    );
    assert_eq!(
        event.header("cloudEvents:subject"),
        Some(user_a.connection_id.to_string())
    );
    let time = event.header("cloudEvents:time").expect("a time");
    assert_eq!(Some(time.as_str()), event.json["occurred_at"].as_str());

    // Again, and by another request id: nothing more is revoked.
    test.publish_request(&channel, &request, None).await;
    let again = revoke_alone(&user_a.token);
    let again_id = test.publish_request(&channel, &again, None).await;
    let refused = events.event_for(again_id).await;
    assert_eq!(refused.routing_key, "connection.disconnect_rejected");
    assert_eq!(refused.json["reason"], "already_revoked");
    assert_eq!(
        events.for_request(request_id).len(),
        1,
        "a duplicate has no event"
    );

    // Disconnecting the connection now revokes only what is left.
    let disconnect = DisconnectRequest::new(user_b.token.clone());
    let disconnect_id = test.publish_request(&channel, &disconnect, None).await;
    let disconnected = events.event_for(disconnect_id).await;
    assert_eq!(disconnected.routing_key, "connection.disconnected");
    assert_eq!(revoked_ids(&disconnected), [user_b.token_id.to_string()]);
    assert_eq!(
        test.token_state(user_a.token_id).await.revoked_by_request,
        Some(request_id),
        "the first revocation is kept"
    );
    let audit = test.audit_row(request_id).await.expect("recorded");
    assert_eq!(
        (
            audit.outcome.as_str(),
            audit.scope.as_str(),
            audit.reason_code.as_deref()
        ),
        ("token_revoked", "token", Some("credential_compromised"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_by_id_is_disconnected_only_for_a_publisher_granted_its_application() {
    let test = TestContext::new().await;
    let ours = test.issue(APP, "company-c", "gusto", "user-a").await;
    let sibling = test.issue(APP, "company-c", "gusto", "user-b").await;
    let theirs = test.issue(OTHER_APP, "company-c", "gusto", "user-a").await;
    let mut events = test.event_tap().await;
    let _worker = worker_granting(&test, &format!("{BROKER_USER}:{APP},billing:{OTHER_APP}"));
    let channel = test.channel().await;

    // No user_id: nobody vouches for it.
    let anonymous = connection_request(APP, ours.connection_id);
    let anonymous_id = test.publish_request(&channel, &anonymous, None).await;
    // Granted another application.
    let elsewhere = connection_request(OTHER_APP, theirs.connection_id);
    let elsewhere_id = test
        .publish_request(&channel, &elsewhere, Some(BROKER_USER))
        .await;
    // Our application, their connection.
    let foreign = connection_request(APP, theirs.connection_id);
    let foreign_id = test
        .publish_request(&channel, &foreign, Some(BROKER_USER))
        .await;
    for (request_id, reason) in [
        (anonymous_id, "not_authorized"),
        (elsewhere_id, "not_authorized"),
        (foreign_id, "unknown_connection"),
    ] {
        let event = events.event_for(request_id).await;
        assert_eq!(event.routing_key, "connection.disconnect_rejected");
        assert_eq!(event.json["reason"], reason);
        let audit = test.audit_row(request_id).await.expect("an audit row");
        assert_eq!(audit.outcome, reason);
    }
    assert!(
        test.is_active(&ours).await && test.is_active(&theirs).await,
        "nothing revoked"
    );
    assert_eq!(
        test.audit_row(elsewhere_id)
            .await
            .and_then(|row| row.publisher)
            .as_deref(),
        Some(BROKER_USER),
        "the audit row names who asked"
    );

    let request = with_reason(
        connection_request(APP, ours.connection_id),
        ReasonCode::UserRequest,
    );
    let request_id = test
        .publish_request(&channel, &request, Some(BROKER_USER))
        .await;
    let event = events.event_for(request_id).await;
    assert_eq!(event.routing_key, "connection.disconnected");
    assert_eq!(event.json["connection_id"], ours.connection_id.to_string());
    assert_eq!(event.json["reason_code"], "user_request");
    let mut expected = vec![ours.token_id.to_string(), sibling.token_id.to_string()];
    expected.sort();
    assert_eq!(revoked_ids(&event), expected);
    assert!(
        test.is_active(&theirs).await,
        "the other application is untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_company_request_ends_that_company_at_every_provider_in_that_application_only() {
    let test = TestContext::new().await;
    let at_gusto = test.issue(APP, "company-c", "gusto", "user-a").await;
    let at_gusto_too = test.issue(APP, "company-c", "gusto", "user-b").await;
    let at_justworks = test.issue(APP, "company-c", "justworks", "user-a").await;
    let other_company = test.issue(APP, "company-d", "gusto", "user-a").await;
    let other_app = test.issue(OTHER_APP, "company-c", "gusto", "user-a").await;
    let mut events = test.event_tap().await;
    let _worker = worker_granting(&test, &format!("{BROKER_USER}:*"));
    let channel = test.channel().await;

    let request = with_reason(
        company_request(APP, "company-c"),
        ReasonCode::EmployerOffboarded,
    );
    let request_id = test
        .publish_request(&channel, &request, Some(BROKER_USER))
        .await;
    let received = events_until_terminal(&mut events, request_id).await;

    let (completed, disconnected) = received.split_last().expect("events");
    assert_eq!(
        completed.routing_key, "disconnect.completed",
        "the terminal event is last"
    );
    assert_eq!(completed.json["scope"], "company");
    assert_eq!(completed.json["client_id"], APP);
    assert_eq!(completed.json["company_id"], "company-c");
    assert_eq!(completed.json["connections"], 2);
    assert_eq!(completed.json["tokens"], 3);
    assert_eq!(completed.json["reason_code"], "employer_offboarded");
    let mut connection_ids: Vec<String> = disconnected
        .iter()
        .map(|event| {
            assert_eq!(event.routing_key, "connection.disconnected");
            assert_eq!(event.json["scope"], "company");
            assert_eq!(event.json["reason_code"], "employer_offboarded");
            event.json["connection_id"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    connection_ids.sort();
    let mut expected = vec![
        at_gusto.connection_id.to_string(),
        at_justworks.connection_id.to_string(),
    ];
    expected.sort();
    assert_eq!(connection_ids, expected, "one event per connection");
    for token in [&at_gusto, &at_gusto_too, &at_justworks] {
        assert!(!test.is_active(token).await);
    }
    assert!(
        test.is_active(&other_company).await,
        "another company is untouched"
    );
    assert!(
        test.is_active(&other_app).await,
        "another application is untouched"
    );
    let audit = test.audit_row(request_id).await.expect("recorded");
    assert_eq!(
        (audit.outcome.as_str(), audit.connections, audit.tokens),
        ("completed", Some(2), 3)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_request_ends_every_connection_of_the_application_in_chunks_once() {
    let test = TestContext::new().await;
    // 120 connections: three chunks of 50 in the test settings.
    test.seed_connections(APP, "company-", "gusto", 120, 2)
        .await;
    test.seed_connections(OTHER_APP, "company-", "gusto", 10, 2)
        .await;
    let mut events = test.event_tap().await;
    let _worker = worker_granting(&test, &format!("{BROKER_USER}:{APP}"));
    let channel = test.channel().await;

    let request = with_reason(client_request(APP), ReasonCode::CustomerOffboarded);
    let request_id = test
        .publish_request(&channel, &request, Some(BROKER_USER))
        .await;
    let received = events_until_terminal(&mut events, request_id).await;

    let (completed, disconnected) = received.split_last().expect("events");
    assert_eq!(completed.routing_key, "disconnect.completed");
    assert_eq!(
        (
            completed.json["connections"].as_i64(),
            completed.json["tokens"].as_i64()
        ),
        (Some(120), Some(240))
    );
    let mut connection_ids: Vec<&str> = disconnected
        .iter()
        .map(|event| event.json["connection_id"].as_str().unwrap_or_default())
        .collect();
    connection_ids.sort_unstable();
    connection_ids.dedup();
    assert_eq!(connection_ids.len(), 120, "every connection has its event");
    assert_eq!(test.ended_by(request_id).await, (120, 240));
    assert_eq!(test.active_connections(APP, None).await, 0);
    assert_eq!(
        test.active_connections(OTHER_APP, None).await,
        10,
        "another application is untouched"
    );
    assert_eq!(test.active_tokens(OTHER_APP).await, 20);
    let fanout = test.fanout(request_id).await.expect("its progress record");
    assert_eq!((fanout.connections, fanout.tokens), (120, 240));
    assert!(fanout.finished_at.is_some());

    // The same request id again changes nothing and publishes nothing.
    let before = events.received.len();
    test.publish_request(&channel, &request, Some(BROKER_USER))
        .await;
    test.wait_for_request_queue_empty().await;
    let marker = DisconnectRequest::new(AccessToken::generate());
    let marker_id = test.publish_request(&channel, &marker, None).await;
    events.event_for(marker_id).await;
    assert_eq!(events.received.len(), before + 1, "only the marker's event");
    assert_eq!(test.ended_by(request_id).await, (120, 240));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wide_request_that_matches_nothing_is_rejected_with_nothing_to_disconnect() {
    let test = TestContext::new().await;
    let elsewhere = test.issue(OTHER_APP, "company-c", "gusto", "user-a").await;
    let mut events = test.event_tap().await;
    let _worker = worker_granting(&test, &format!("{BROKER_USER}:*"));
    let channel = test.channel().await;

    for request in [company_request(APP, "company-c"), client_request(APP)] {
        let request_id = test
            .publish_request(&channel, &request, Some(BROKER_USER))
            .await;
        let received = events_until_terminal(&mut events, request_id).await;
        assert_eq!(received.len(), 1);
        assert_eq!(received[0].routing_key, "connection.disconnect_rejected");
        assert_eq!(received[0].json["reason"], "nothing_to_disconnect");
        assert_eq!(
            test.audit_row(request_id)
                .await
                .map(|row| row.outcome)
                .as_deref(),
            Some("nothing_to_disconnect")
        );
    }
    assert!(test.is_active(&elsewhere).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_authorized_publishers_every_wide_request_is_refused() {
    let test = TestContext::new().await;
    let token = test.issue(APP, "company-c", "gusto", "user-a").await;
    let mut events = test.event_tap().await;
    let _worker = worker_granting(&test, "");
    let channel = test.channel().await;

    for request in [
        connection_request(APP, token.connection_id),
        company_request(APP, "company-c"),
        client_request(APP),
    ] {
        let request_id = test
            .publish_request(&channel, &request, Some(BROKER_USER))
            .await;
        let event = events.event_for(request_id).await;
        assert_eq!(event.json["reason"], "not_authorized");
    }
    assert!(test.is_active(&token).await);
}

/// RabbitMQ refuses a message whose user_id is not the user of the
/// connection publishing it: a publisher cannot claim another's grants.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_refuses_a_user_id_that_is_not_the_publishers() {
    let test = TestContext::new().await;
    let channel = test.channel().await;
    let request = client_request(APP);
    let published = channel
        .basic_publish(
            test.topology.request_exchange.as_str().into(),
            test.topology.request_routing_key.as_str().into(),
            Default::default(),
            &request.encode(),
            lapin::BasicProperties::default().with_user_id("ops".into()),
        )
        .await;
    let confirmed = match published {
        Ok(confirm) => confirm.await.map(|confirm| confirm.is_ack()),
        Err(error) => Err(error),
    };
    assert!(
        !matches!(confirmed, Ok(true)),
        "the broker accepted a forged user_id: {confirmed:?}"
    );
    assert_eq!(
        test.ready_messages(&test.channel().await, &test.topology.request_queue)
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_selectors_are_dead_lettered_with_their_reason_and_the_worker_goes_on() {
    let test = TestContext::new().await;
    let token = test.issue(APP, "company-c", "gusto", "user-a").await;
    let (mut events, _worker, channel) = test.running().await;
    let properties = || {
        lapin::BasicProperties::default()
            .with_content_type(disconnect_worker::domain::request::CONTENT_TYPE.into())
    };
    let id = Uuid::new_v4();
    // Each body with the code it must be dead-lettered with. The worker settles deliveries
    // concurrently, so the dead letters' order is not the publishing order: each letter is
    // matched to its request by its body.
    let cases = [
        (
            serde_json::json!({"request_id": id, "access_token": token.token.expose(), "company_id": "company-c", "client_id": APP}),
            "invalid_selector",
        ),
        (
            serde_json::json!({"request_id": id, "scope": "galaxy", "client_id": APP}),
            "invalid_field",
        ),
        (
            serde_json::json!({"request_id": id, "company_id": "company-c"}),
            "missing_field",
        ),
        (
            serde_json::json!({"request_id": id, "access_token": token.token.expose(), "reason_code": "bored"}),
            "invalid_field",
        ),
        (
            serde_json::json!({"request_id": id, "scope": "client", "client_id": APP}),
            "missing_field",
        ),
    ]
    .map(|(body, code)| (body.to_string(), code));
    for (body, _) in &cases {
        test.publish_raw(&channel, body.as_bytes(), properties())
            .await;
    }
    let letters = test.wait_for_dead_letters(cases.len()).await;
    let mut codes: Vec<_> = letters
        .iter()
        .map(|letter| {
            (
                String::from_utf8_lossy(&letter.body).into_owned(),
                letter.code.clone().unwrap_or_default(),
            )
        })
        .collect();
    codes.sort();
    let mut expected: Vec<_> = cases
        .iter()
        .map(|(body, code)| (body.clone(), code.to_string()))
        .collect();
    expected.sort();
    assert_eq!(codes, expected);
    for letter in &letters {
        let reason = letter.reason.clone().unwrap_or_default();
        assert!(!reason.contains(token.token.expose()), "{reason}");
    }

    let request = DisconnectRequest::new(token.token.clone());
    let request_id = test.publish_request(&channel, &request, None).await;
    assert_eq!(
        events.event_for(request_id).await.routing_key,
        "connection.disconnected"
    );
}

/// A broker user created for one test and deleted after it.
struct BrokerUser {
    name: String,
    password: String,
}

impl BrokerUser {
    /// `None` where `rabbitmqctl` cannot manage the test broker (a broker in
    /// a container): the test then says so and checks nothing.
    fn create(tags: &[&str]) -> Option<Self> {
        let ctl = |args: &[&str]| {
            std::process::Command::new("rabbitmqctl")
                .args(args)
                .output()
                .ok()
                .filter(|output| output.status.success())
        };
        ctl(&["status"])?;
        let user = Self {
            name: format!("dwtest-{}", Uuid::new_v4().simple()),
            password: Uuid::new_v4().simple().to_string(),
        };
        ctl(&["add_user", &user.name, &user.password])?;
        let mut set_tags = vec!["set_user_tags", user.name.as_str()];
        set_tags.extend_from_slice(tags);
        ctl(&set_tags)?;
        ctl(&["set_permissions", "-p", "/", &user.name, ".*", ".*", ".*"])?;
        Some(user)
    }

    fn url(&self, amqp_url: &str) -> String {
        let mut url = url::Url::parse(amqp_url).expect("url");
        url.set_username(&self.name).expect("user");
        url.set_password(Some(&self.password)).expect("password");
        url.to_string()
    }
}

impl Drop for BrokerUser {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["delete_user", &self.name])
            .output();
    }
}

/// The `user_id` authorization rests on RabbitMQ refusing a forged
/// `user_id`, and RabbitMQ makes one exception: a user tagged
/// `impersonator` may set any. Shown here: a plain user's forgery is
/// refused; an impersonator's is accepted, and the worker then acts on the
/// grants of the user it names. So no publisher may carry the tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_impersonator_tagged_user_can_forge_user_id_so_publishers_must_not_have_the_tag() {
    let test = TestContext::new().await;
    let (Some(plain), Some(impersonator)) = (
        BrokerUser::create(&[]),
        BrokerUser::create(&["impersonator"]),
    ) else {
        eprintln!("skipped: rabbitmqctl cannot manage the test broker's users");
        return;
    };
    let token = test.issue(APP, "company-c", "gusto", "user-a").await;
    let mut events = test.event_tap().await;
    let _worker = worker_granting(&test, &format!("ops:{APP}"));
    let forged = || {
        lapin::BasicProperties::default()
            .with_content_type(disconnect_worker::domain::request::CONTENT_TYPE.into())
            .with_user_id("ops".into())
    };
    let request = connection_request(APP, token.connection_id);
    let publish_as = |user: &BrokerUser| {
        let url = user.url(&test.amqp_url);
        let topology = test.topology.clone();
        let body = request.encode();
        let properties = forged();
        async move {
            let channel = crate::support::broker::channel(&url).await;
            channel
                .confirm_select(Default::default())
                .await
                .expect("confirms");
            let published = channel
                .basic_publish(
                    topology.request_exchange.as_str().into(),
                    topology.request_routing_key.as_str().into(),
                    Default::default(),
                    &body,
                    properties,
                )
                .await;
            match published {
                Ok(confirm) => confirm.await.map(|confirm| confirm.is_ack()),
                Err(error) => Err(error),
            }
        }
    };

    let refused = publish_as(&plain).await;
    assert!(
        !matches!(refused, Ok(true)),
        "a plain user's forgery: {refused:?}"
    );
    assert!(test.is_active(&token).await);

    let accepted = publish_as(&impersonator).await;
    assert!(matches!(accepted, Ok(true)), "{accepted:?}");
    let event = events.event_for(request.request_id.as_uuid()).await;
    assert_eq!(
        event.routing_key, "connection.disconnected",
        "acted on ops's grant"
    );
    let audit = test
        .audit_row(request.request_id.as_uuid())
        .await
        .expect("audit row");
    assert_eq!(
        audit.publisher.as_deref(),
        Some("ops"),
        "recorded as the forged user"
    );
}
