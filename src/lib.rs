//! disconnect-worker: consumes disconnect requests from RabbitMQ (a token,
//! its connection, a connection by id, a company, a whole application, or
//! entities of a connection),
//! revokes the tokens in Postgres, and publishes each outcome as an event,
//! exactly once per request id.

pub mod broker;
pub mod cli;
pub mod commands;
pub mod config;
pub mod db;
pub mod domain;
pub mod observability;
pub mod outbox;
pub mod retention;
pub mod retry;
pub mod secret;
pub mod service;
pub mod telemetry;
pub mod version;
pub mod webhooks;
pub mod worker;
