//! Configuration: every setting is a command-line flag with an environment
//! variable behind it and a default that works against the local services.
//! A bad value stops start-up with a message that names the variable. This
//! module turns them into each component's own settings; no component reads
//! the configuration itself.

pub mod broker;
pub mod database;
mod reference;
mod retention;
mod scopes;
pub mod webhooks;
mod worker;

use clap::ValueEnum;

pub use broker::{topology_env, BrokerArgs};
pub use database::DatabaseArgs;
pub use worker::{run_settings, WorkerArgs};

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@localhost:5432/disconnect_worker";
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@localhost:5672/%2f";
/// The application a token belongs to when `token issue` is not told.
pub const DEFAULT_CLIENT_ID: &str = "default-app";

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}
