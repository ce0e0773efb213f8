//! The outbox as a crashed worker, a person or another release leaves it:
//! events committed and unpublished, aged, changed by hand.

use disconnect_worker::domain::DisconnectRequest;
use disconnect_worker::outbox::OutboxFormat;
use disconnect_worker::service::{record_disconnect, Policy, Processed};
use uuid::Uuid;

use super::broker::decoded_request;
use super::TestContext;

impl TestContext {
    /// Record `request` as a worker would, and publish nothing: the state a
    /// worker leaves when it crashes between its commit and its publish.
    pub async fn committed_and_not_published(
        &self,
        request: &DisconnectRequest,
        format: OutboxFormat,
    ) -> Processed {
        let mut conn = self.pool.get().await.expect("db");
        record_disconnect(&mut conn, request, &Policy::default(), format)
            .await
            .expect("committed")
    }

    /// A connection per company, its token's disconnect committed and left
    /// unpublished (by reference), written `age` ago; their request ids.
    pub async fn leave_unpublished_events(&self, companies: &[&str], age: &str) -> Vec<Uuid> {
        let mut request_ids = Vec::new();
        for company in companies {
            let token = self.issue("app", company, "gusto", "user-a").await;
            let request = decoded_request(Uuid::new_v4(), token.token.expose());
            self.committed_and_not_published(&request, OutboxFormat::ByReference)
                .await;
            request_ids.push(request.request_id.as_uuid());
        }
        self.age_unpublished_events(age).await;
        request_ids
    }

    /// Date every unpublished event `age` back, in both of the outbox's
    /// tables.
    pub async fn age_unpublished_events(&self, age: &str) {
        self.execute(&format!(
            "UPDATE outbox_events SET created_at = now() - interval '{age}'; \
             UPDATE outbox_disconnections SET created_at = now() - interval '{age}'"
        ))
        .await;
    }

    /// Wait until no event is left unpublished in either outbox table.
    pub async fn wait_until_outbox_empty(&self) {
        super::eventually("the outbox empty", || async {
            (self.unpublished_event_count().await == 0).then_some(())
        })
        .await;
    }

    /// How many events are set aside.
    pub async fn set_aside_count(&self) -> i64 {
        use diesel::dsl::count_star;
        use diesel::prelude::*;
        use diesel_async::RunQueryDsl;
        use disconnect_worker::db::schema::outbox_set_aside;
        let mut conn = self.pool.get().await.expect("db");
        outbox_set_aside::table
            .select(count_star())
            .first(&mut conn)
            .await
            .expect("query")
    }
}
