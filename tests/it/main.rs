//! Integration tests, one binary (one module per area), against real Postgres
//! and RabbitMQ: see support/services.rs for how they are found.

mod acks;
mod addresses;
mod bad_input;
mod batching;
mod bounds;
mod cli;
mod cluster;
mod concurrency;
mod database_outage;
mod dead_letters;
mod density;
mod entities;
mod fanout;
mod fanout_outage;
mod faults;
mod idempotency;
mod isolation;
mod mixed_releases;
mod observability;
mod outbox;
mod outbox_format;
mod outbox_rows;
mod partition;
mod postgres_failover;
mod postgres_hosts;
mod reconnect;
mod retention;
mod scopes;
mod secrets;
mod seed_scenarios;
mod startup;
mod support;
mod tls;
mod topology;
mod tracing;
