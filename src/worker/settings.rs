//! Everything `run` needs, validated: built by `config` from the command
//! line and the environment, or directly by tests.

use std::net::SocketAddr;
use std::time::Duration;

use crate::broker::{BrokerUrls, Topology};
use crate::db::DatabaseSettings;
use crate::domain::Authorizations;
use crate::outbox::OutboxSettings;
use crate::retention::RetentionSettings;
use crate::retry::RetrySettings;

#[derive(Debug, Clone)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub broker: BrokerSettings,
    pub consume: ConsumeSettings,
    pub retry: RetrySettings,
    pub outbox: OutboxSettings,
    pub scopes: ScopeSettings,
    pub retention: RetentionSettings,
    /// Time allowed for a graceful stop.
    pub shutdown_grace: Duration,
    /// Create the database and migrate before consuming.
    pub run_migrations: bool,
    /// Where to serve the HTTP endpoints; `None`: not at all.
    pub http_address: Option<SocketAddr>,
}

#[derive(Debug, Clone)]
pub struct BrokerSettings {
    /// One address, or the nodes of a cluster, tried in turn.
    pub urls: BrokerUrls,
    pub topology: Topology,
    /// Declare the topology, or only check that it exists.
    pub declare_topology: bool,
    /// Unacknowledged deliveries the broker sends ahead.
    pub prefetch: u16,
}

/// How deliveries are gathered into batches and decoded.
#[derive(Debug, Clone)]
pub struct ConsumeSettings {
    /// Most requests processed in one transaction.
    pub batch_size: usize,
    /// How long a batch waits for more requests while the worker is busy;
    /// zero: it takes only those already received.
    pub batch_linger: Duration,
    pub max_request_bytes: usize,
}

/// Requests that name no token: who may send them, and how company and
/// client requests are worked through.
#[derive(Debug, Clone)]
pub struct ScopeSettings {
    pub authorizations: Authorizations,
    /// Connections per fan-out transaction.
    pub fanout_chunk_size: i64,
}
