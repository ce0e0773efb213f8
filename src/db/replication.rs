//! What the primary's replication promises about a commit, told to the
//! operator: at start, when it changes, and always on a metric.
//!
//! It matters because of the failover. The worker acknowledges a request
//! and publishes its events once Postgres says the transaction committed.
//! With a synchronous standby (`synchronous_standby_names`, and
//! `synchronous_commit` at `on`, `remote_write` or `remote_apply`) that
//! commit is on the standby too, so a failover to it keeps it. With only
//! asynchronous standbys it may not be. The disconnect is then gone from
//! the new primary while its event went out: downstream was told the
//! tokens were revoked, and they work again. docs/guarantees.md says what
//! each setting guarantees.
//!
//! `pg_stat_replication` shows each standby's `sync_state` only to roles
//! with `pg_read_all_stats` (or `pg_monitor`); to others it shows that
//! standbys exist, and the mode is then judged from the settings alone.

use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use diesel_async::RunQueryDsl;
use tokio_util::sync::CancellationToken;

use super::BoundedPool;
use crate::observability::metrics;

/// How often the replication is read again.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(60);

/// The primary's replication, as the worker sees it.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct Replication {
    #[diesel(sql_type = Text)]
    pub synchronous_standby_names: String,
    #[diesel(sql_type = Text)]
    pub synchronous_commit: String,
    /// Standbys streaming from this server.
    #[diesel(sql_type = BigInt)]
    pub standbys: i64,
    /// Of those, how many this role may see the `sync_state` of.
    #[diesel(sql_type = BigInt)]
    pub readable: i64,
    /// Of those, how many are synchronous (`sync` or `quorum`).
    #[diesel(sql_type = BigInt)]
    pub synchronous: i64,
}

/// What a commit the worker is told of survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// On a synchronous standby too: a failover to it keeps it.
    Synchronous,
    /// A synchronous standby is named, none is connected: every commit
    /// waits until one is.
    Waiting,
    /// Only on this server: a failover to an asynchronous standby can lose
    /// it after its event went out.
    Asynchronous,
    /// No standby streams from this server (a single server, or replication
    /// below Postgres, as some managed services do).
    NoStandby,
}

impl Mode {
    pub const ALL: [Mode; 4] = [
        Mode::Synchronous,
        Mode::Waiting,
        Mode::Asynchronous,
        Mode::NoStandby,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Synchronous => "synchronous",
            Self::Waiting => "waiting_for_standby",
            Self::Asynchronous => "asynchronous",
            Self::NoStandby => "no_standby",
        }
    }
}

impl Replication {
    pub fn mode(&self) -> Mode {
        let commit_waits = matches!(
            self.synchronous_commit.as_str(),
            "on" | "remote_write" | "remote_apply"
        );
        let named = !self.synchronous_standby_names.trim().is_empty();
        let unreadable = self.standbys - self.readable;
        match (named && commit_waits, self.standbys) {
            (false, 0) => Mode::NoStandby,
            (false, _) => Mode::Asynchronous,
            (true, 0) => Mode::Waiting,
            // Named, and one is synchronous, or may be (not readable).
            (true, _) if self.synchronous > 0 || unreadable > 0 => Mode::Synchronous,
            (true, _) => Mode::Waiting,
        }
    }
}

/// Read the replication of the server `conn` is on.
pub async fn read(conn: &mut diesel_async::AsyncPgConnection) -> QueryResult<Replication> {
    diesel::sql_query(
        "SELECT current_setting('synchronous_standby_names') AS synchronous_standby_names, \
                current_setting('synchronous_commit') AS synchronous_commit, \
                count(*) AS standbys, \
                count(sync_state) AS readable, \
                count(*) FILTER (WHERE sync_state IN ('sync', 'quorum')) AS synchronous \
         FROM (SELECT sync_state FROM pg_stat_replication) AS standbys",
    )
    .get_result(conn)
    .await
}

/// Read it now and every [`REFRESH_INTERVAL`] until `stop`: the metric each
/// time, a log line at the first read and whenever the mode changes (a
/// warning when a failover could lose a disconnect whose event went out).
pub async fn watch(pool: BoundedPool, stop: CancellationToken) {
    let mut last: Option<Mode> = None;
    loop {
        match pool.read(read).await {
            Ok(replication) => {
                let mode = replication.mode();
                metrics::database_replication(mode, replication.standbys);
                if last != Some(mode) {
                    report(&replication, mode);
                    last = Some(mode);
                }
            }
            // An outage is logged by the pool's health; read again later.
            Err(error) => {
                tracing::debug!(error = %error, "could not read the database's replication")
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(REFRESH_INTERVAL) => {}
        }
    }
}

fn report(replication: &Replication, mode: Mode) {
    let Replication {
        synchronous_standby_names: names,
        synchronous_commit: commit,
        standbys,
        synchronous,
        ..
    } = replication;
    match mode {
        Mode::Synchronous => tracing::info!(
            standbys, synchronous, synchronous_standby_names = %names, synchronous_commit = %commit,
            "database replication: synchronous; a failover to a synchronous standby keeps every disconnect whose event went out"
        ),
        Mode::NoStandby => tracing::info!(
            synchronous_standby_names = %names, synchronous_commit = %commit,
            "database replication: no standby streams from this server"
        ),
        Mode::Asynchronous => tracing::warn!(
            standbys, synchronous_standby_names = %names, synchronous_commit = %commit,
            "database replication: asynchronous; a failover can lose disconnects whose events already went out (their tokens work again); name the standbys in synchronous_standby_names, see docs/guarantees.md"
        ),
        Mode::Waiting => tracing::warn!(
            standbys, synchronous_standby_names = %names, synchronous_commit = %commit,
            "database replication: a synchronous standby is named but none is streaming; every commit waits for one"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replication(names: &str, commit: &str, standbys: i64, readable: i64, sync: i64) -> Mode {
        Replication {
            synchronous_standby_names: names.into(),
            synchronous_commit: commit.into(),
            standbys,
            readable,
            synchronous: sync,
        }
        .mode()
    }

    #[test]
    fn the_mode_follows_the_settings_and_the_standbys() {
        assert_eq!(replication("", "on", 0, 0, 0), Mode::NoStandby);
        assert_eq!(replication("", "on", 2, 2, 0), Mode::Asynchronous);
        assert_eq!(replication("*", "on", 1, 1, 1), Mode::Synchronous);
        assert_eq!(
            replication("ANY 1 (a, b)", "remote_apply", 2, 2, 2),
            Mode::Synchronous
        );
        // Named, but the commit does not wait for it.
        assert_eq!(replication("*", "local", 1, 1, 1), Mode::Asynchronous);
        assert_eq!(replication("*", "off", 1, 1, 1), Mode::Asynchronous);
        // Named, none streaming, or none of those streaming synchronous.
        assert_eq!(replication("*", "on", 0, 0, 0), Mode::Waiting);
        assert_eq!(replication("b", "on", 1, 1, 0), Mode::Waiting);
        // Named, streaming, states hidden from this role.
        assert_eq!(replication("*", "on", 1, 0, 0), Mode::Synchronous);
    }
}
