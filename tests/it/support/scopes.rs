//! Support for requests at every scope: publishing them as a given broker
//! user, seeding many connections at once, and reading fan-outs and audit
//! rows.

use chrono::{DateTime, Utc};
use diesel::dsl::count_star;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use diesel_async::RunQueryDsl;
use disconnect_worker::db::schema::{
    access_tokens, connections, disconnect_fanouts, disconnect_requests,
};
use disconnect_worker::domain::request::CONTENT_TYPE;
use disconnect_worker::domain::{
    ClientId, CompanyId, ConnectionId, DisconnectRequest, ReasonCode, Target,
};
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel};
use uuid::Uuid;

use super::TestContext;

/// The user of the test broker's URL: the only `user_id` RabbitMQ lets
/// the test's connections publish with.
pub const BROKER_USER: &str = "guest";

pub fn client(id: &str) -> ClientId {
    ClientId::parse(id.into()).expect("a client id")
}

pub fn company(id: &str) -> CompanyId {
    CompanyId::parse(id.into()).expect("a company id")
}

/// A request for every active connection of `company` in `client_id`.
pub fn company_request(client_id: &str, company_id: &str) -> DisconnectRequest {
    DisconnectRequest::for_target(Target::Company {
        client_id: client(client_id),
        company_id: company(company_id),
    })
}

/// A request for every active connection of `client_id`.
pub fn client_request(client_id: &str) -> DisconnectRequest {
    DisconnectRequest::for_target(Target::Client {
        client_id: client(client_id),
    })
}

/// A request for one connection by id.
pub fn connection_request(client_id: &str, connection_id: ConnectionId) -> DisconnectRequest {
    DisconnectRequest::for_target(Target::Connection {
        client_id: client(client_id),
        connection_id,
    })
}

pub fn with_reason(request: DisconnectRequest, code: ReasonCode) -> DisconnectRequest {
    DisconnectRequest {
        reason_code: Some(code),
        ..request
    }
}

/// What the audit row of a request says.
#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub struct AuditRow {
    pub outcome: String,
    pub scope: String,
    pub reason_code: Option<String>,
    pub client_id: Option<String>,
    pub company_id: Option<String>,
    pub publisher: Option<String>,
    pub connections: Option<i32>,
    pub tokens: i32,
}

/// A fan-out's progress record.
#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub struct FanoutRow {
    pub connections: i64,
    pub tokens: i64,
    pub last_connection_id: Option<Uuid>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl TestContext {
    /// Publish a request as a producer would, with `user_id` set when given
    /// (RabbitMQ refuses one that is not the connection's user).
    pub async fn publish_request(
        &self,
        channel: &Channel,
        request: &DisconnectRequest,
        user_id: Option<&str>,
    ) -> Uuid {
        let mut properties =
            BasicProperties::default().with_content_type(ShortString::from(CONTENT_TYPE));
        if let Some(user_id) = user_id {
            properties = properties.with_user_id(ShortString::from(user_id));
        }
        self.publish_raw(channel, &request.encode(), properties)
            .await;
        request.request_id.as_uuid()
    }

    /// `count` active connections of `client_id`, companies
    /// `{company_prefix}1..count` at `provider`, each with
    /// `tokens_per_connection` tokens (their plaintext unknown: for
    /// requests that name no token). In a few statements, not one per row.
    pub async fn seed_connections(
        &self,
        client_id: &str,
        company_prefix: &str,
        provider: &str,
        count: i64,
        tokens_per_connection: i64,
    ) {
        let mut conn = self.pool.get().await.expect("db");
        diesel::sql_query(
            "INSERT INTO connections (id, client_id, company_id, provider_id, status, created_at) \
             SELECT gen_random_uuid(), $1, $2 || i, $3, 'active', now() - interval '1 minute' \
             FROM generate_series(1, $4) AS i",
        )
        .bind::<Text, _>(client_id)
        .bind::<Text, _>(company_prefix)
        .bind::<Text, _>(provider)
        .bind::<BigInt, _>(count)
        .execute(&mut conn)
        .await
        .expect("seeding connections");
        diesel::sql_query(
            "INSERT INTO access_tokens (id, connection_id, token_hash, token_prefix) \
             SELECT gen_random_uuid(), c.id, \
                    sha256(convert_to(c.id::text || '-' || j, 'UTF8')), 'seed' \
             FROM connections AS c, generate_series(1, $2) AS j \
             WHERE c.client_id = $1 AND c.provider_id = $3 AND c.company_id LIKE $4 || '%'",
        )
        .bind::<Text, _>(client_id)
        .bind::<BigInt, _>(tokens_per_connection)
        .bind::<Text, _>(provider)
        .bind::<Text, _>(company_prefix)
        .execute(&mut conn)
        .await
        .expect("seeding tokens");
    }

    /// Active connections of an application, or of one of its companies.
    pub async fn active_connections(&self, client_id: &str, company_id: Option<&str>) -> i64 {
        let mut conn = self.pool.get().await.expect("db");
        let mut query = connections::table
            .filter(connections::client_id.eq(client_id))
            .filter(connections::status.eq("active"))
            .into_boxed();
        if let Some(company_id) = company_id {
            query = query.filter(connections::company_id.eq(company_id));
        }
        query
            .select(count_star())
            .first(&mut conn)
            .await
            .expect("query")
    }

    /// Active tokens of an application.
    pub async fn active_tokens(&self, client_id: &str) -> i64 {
        let mut conn = self.pool.get().await.expect("db");
        access_tokens::table
            .inner_join(connections::table)
            .filter(connections::client_id.eq(client_id))
            .filter(access_tokens::revoked_at.is_null())
            .select(count_star())
            .first(&mut conn)
            .await
            .expect("query")
    }

    /// Connections and tokens ended by one request.
    pub async fn ended_by(&self, request_id: Uuid) -> (i64, i64) {
        let mut conn = self.pool.get().await.expect("db");
        let connections = connections::table
            .filter(connections::disconnected_by_request.eq(request_id))
            .select(count_star())
            .first(&mut conn)
            .await
            .expect("query");
        let tokens = access_tokens::table
            .filter(access_tokens::revoked_by_request.eq(request_id))
            .select(count_star())
            .first(&mut conn)
            .await
            .expect("query");
        (connections, tokens)
    }

    pub async fn audit_row(&self, request_id: Uuid) -> Option<AuditRow> {
        let mut conn = self.pool.get().await.expect("db");
        disconnect_requests::table
            .find(request_id)
            .select((
                disconnect_requests::outcome,
                disconnect_requests::scope,
                disconnect_requests::reason_code,
                disconnect_requests::client_id,
                disconnect_requests::company_id,
                disconnect_requests::publisher,
                disconnect_requests::disconnected_connections,
                disconnect_requests::revoked_token_count,
            ))
            .first(&mut conn)
            .await
            .optional()
            .expect("query")
    }

    pub async fn fanout(&self, request_id: Uuid) -> Option<FanoutRow> {
        let mut conn = self.pool.get().await.expect("db");
        disconnect_fanouts::table
            .find(request_id)
            .select((
                disconnect_fanouts::connections,
                disconnect_fanouts::tokens,
                disconnect_fanouts::last_connection_id,
                disconnect_fanouts::finished_at,
            ))
            .first(&mut conn)
            .await
            .optional()
            .expect("query")
    }
}
