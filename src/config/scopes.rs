//! Requests that name no token: who may send them, and the size of a
//! fan-out's steps.

use clap::Args;

use crate::domain::Authorizations;
use crate::worker::ScopeSettings;

#[derive(Debug, Clone, Args)]
pub struct ScopeArgs {
    /// Broker users that may send requests naming no token (by connection
    /// id, a company, or a whole application), for which applications:
    /// comma-separated user:application pairs, `*` for every application
    /// (billing:app-a,ops:*). The user is the message's AMQP user_id, which
    /// RabbitMQ checks against the publishing connection. Unset: every such
    /// request is refused as not_authorized.
    #[arg(
        long,
        env = "AUTHORIZED_PUBLISHERS",
        value_name = "AUTHORIZED_PUBLISHERS",
        default_value = ""
    )]
    pub authorized_publishers: String,

    /// Connections disconnected per transaction by a company or client
    /// request. Larger is faster in total; smaller holds locks for less time
    /// and lets ordinary requests through sooner.
    #[arg(long, env = "FANOUT_CHUNK_SIZE", value_name = "FANOUT_CHUNK_SIZE", default_value_t = 200,
          value_parser = clap::value_parser!(u16).range(1..=10_000))]
    pub fanout_chunk_size: u16,
}

impl ScopeArgs {
    pub fn settings(&self) -> Result<ScopeSettings, String> {
        Ok(ScopeSettings {
            authorizations: Authorizations::parse(
                "AUTHORIZED_PUBLISHERS",
                &self.authorized_publishers,
            )?,
            fanout_chunk_size: i64::from(self.fanout_chunk_size),
        })
    }
}
