//! disconnect-worker: consumes connection disconnect requests from RabbitMQ,
//! revokes every token of the connection in Postgres, and publishes the
//! outcome as an event, exactly once per request id.

pub mod broker;
pub mod cli;
pub mod commands;
pub mod config;
pub mod db;
pub mod domain;
pub mod observability;
pub mod outbox;
pub mod retry;
pub mod secret;
pub mod service;
pub mod telemetry;
pub mod worker;
