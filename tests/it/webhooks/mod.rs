//! Signed webhooks, end to end: the worker and the dispatcher binary on
//! the real Postgres and RabbitMQ, receivers on loopback, signatures
//! checked by the official libraries.

mod delivery;
mod endpoints;
mod https;
mod metrics;
mod outages;
mod retries;
mod ssrf;

use uuid::Uuid;

use crate::support::process::until_ready;
use crate::support::TestContext;

/// Disconnect a fresh connection of `client`: one `connection.disconnected`
/// event for it. Returns the request id.
pub async fn disconnect_one(context: &TestContext, channel: &lapin::Channel, client: &str) -> Uuid {
    let company = format!("company-{}", Uuid::new_v4());
    let issued = context.issue(client, &company, "gusto", "alice").await;
    context
        .request_disconnect(channel, Uuid::new_v4(), issued.token.expose())
        .await
}

/// A dispatcher whose queue is bound before any event is published.
pub async fn ready_dispatcher(
    context: &TestContext,
    extra: &[(&str, &str)],
) -> disconnect_testkit::WorkerProcess {
    let dispatcher = context.spawn_dispatcher(extra);
    until_ready(&dispatcher).await;
    dispatcher
}
