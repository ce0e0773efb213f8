//! The outbox format, a setting every replica reads from the database
//! (`shared_settings`, migration 12) so that all of them agree:
//!
//! - `whole`: every event with its bytes, in `outbox_events`, which every
//!   release reads and publishes. A database upgraded from 0.3.x starts so:
//!   a 0.3.x replica beside this release, or after a rollback to it, finds
//!   every event it must publish or wait for.
//! - `by_reference`: every `connection.disconnected` event kept by
//!   reference (about 600 bytes less WAL per disconnect), which only this
//!   release and later ones publish. For a database this
//!   release created, or once no replica of 0.3.x or earlier can run.
//!
//! A fan-out's chunk events follow the format too: in `whole`, a 0.3.x
//! replica's fan-out, which counts only `outbox_events` before it publishes
//! `disconnect.completed`, sees them all.
//!
//! Each replica reads it at start and every [`REFRESH`]; a value this
//! release does not know (a newer release set it) stops start-up, and at
//! run time makes this replica write whole events (which every release
//! reads) with an error in the log.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use tokio_util::sync::CancellationToken;

use crate::db::schema::shared_settings;
use crate::db::BoundedPool;

/// How often a running replica reads the format again: a change reaches
/// every replica within this, and a batch that read it before commits
/// within the transaction deadline after.
pub const REFRESH: Duration = Duration::from_secs(5);

/// The name of the setting in `shared_settings`.
const SETTING: &str = "outbox_format";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxFormat {
    Whole,
    ByReference,
}

impl OutboxFormat {
    pub const ALL: [Self; 2] = [Self::Whole, Self::ByReference];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Whole => "whole",
            Self::ByReference => "by_reference",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|format| format.as_str() == text)
    }
}

/// The format stored, as text (it may be a newer release's).
pub async fn stored(conn: &mut AsyncPgConnection) -> QueryResult<String> {
    shared_settings::table
        .find(SETTING)
        .select(shared_settings::value)
        .first(conn)
        .await
}

/// Store `format`; returns the one it replaced.
pub async fn store(conn: &mut AsyncPgConnection, format: OutboxFormat) -> QueryResult<String> {
    let before = stored(conn).await?;
    diesel::update(shared_settings::table.find(SETTING))
        .set((
            shared_settings::value.eq(format.as_str()),
            shared_settings::changed_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .await?;
    Ok(before)
}

/// The stored format, which this release must know.
pub async fn read(conn: &mut AsyncPgConnection) -> anyhow::Result<OutboxFormat> {
    let text = stored(conn).await?;
    OutboxFormat::parse(&text).ok_or_else(|| unknown(&text))
}

pub fn unknown(text: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "the database's outbox format is `{text}`, which this release does not know: a newer \
         release set it. Run that release, or set a format this one reads with the newer \
         release's `disconnect-worker outbox format set whole` before rolling back"
    )
}

/// The format this replica writes, shared with its writers and refreshed
/// from the database.
#[derive(Debug, Clone)]
pub struct CurrentFormat(Arc<AtomicU8>);

impl CurrentFormat {
    pub fn new(format: OutboxFormat) -> Self {
        Self(Arc::new(AtomicU8::new(format as u8)))
    }

    pub fn get(&self) -> OutboxFormat {
        match AtomicU8::load(&self.0, Ordering::Relaxed) {
            x if x == OutboxFormat::ByReference as u8 => OutboxFormat::ByReference,
            _ => OutboxFormat::Whole,
        }
    }

    fn set(&self, format: OutboxFormat) {
        AtomicU8::store(&self.0, format as u8, Ordering::Relaxed);
    }

    /// Read the format every [`REFRESH`] until `stop`. A database that
    /// cannot be read keeps the last one (the outage is logged by the
    /// pool's health); one this release does not know makes it `whole`.
    pub async fn refresh(self, pool: BoundedPool, stop: CancellationToken) {
        let mut unknown_logged = false;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(REFRESH) => {}
            }
            let Ok(text) = pool.read(async |conn| stored(conn).await).await else {
                continue;
            };
            match OutboxFormat::parse(&text) {
                Some(format) => {
                    if format != self.get() {
                        tracing::info!(outbox.format = format.as_str(), "outbox format changed");
                    }
                    self.set(format);
                    unknown_logged = false;
                }
                None => {
                    if !unknown_logged {
                        tracing::error!(error = %unknown(&text),
                            "writing every event whole until the format is one this release knows");
                        unknown_logged = true;
                    }
                    self.set(OutboxFormat::Whole);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_format_reads_back_as_itself_and_an_unknown_one_as_none() {
        for format in OutboxFormat::ALL {
            assert_eq!(OutboxFormat::parse(format.as_str()), Some(format));
            assert_eq!(CurrentFormat::new(format).get(), format);
        }
        assert_eq!(OutboxFormat::parse("by_reference_v2"), None);
    }
}
