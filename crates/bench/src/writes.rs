//! What the worker writes to Postgres per request: the WAL it generates
//! (record bytes and full-page images apart, from `pg_walinspect`, which
//! ships with Postgres 15) and the rows it inserts, updates (HOT or not)
//! and deletes in each table (`pg_stat_user_tables`). Unlike CPU time these
//! do not depend on the machine, so they are the figures to hold.
//!
//! WAL is the cluster's: everything written while a run is measured counts
//! (autovacuum of the run's tables included), so nothing else should run on
//! the server meanwhile. Row counts are the benchmark database's only; a
//! backend reports them when it goes idle or exits, so the second snapshot
//! is taken after the worker has exited.

use std::collections::BTreeMap;

use diesel::sql_types::{BigInt, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use disconnect_worker::db::DbPool;
use serde::Serialize;

/// The tables the worker writes.
const TABLES: [&str; 7] = [
    "access_tokens",
    "connections",
    "connection_entities",
    "disconnect_requests",
    "disconnect_fanouts",
    "outbox_disconnections",
    "outbox_events",
];

/// The WAL position and every table's counters at one moment.
pub struct Snapshot {
    lsn: String,
    tables: BTreeMap<String, Counts>,
}

#[derive(Debug, Clone, Copy, Default, QueryableByName)]
struct Counts {
    #[diesel(sql_type = BigInt)]
    inserted: i64,
    #[diesel(sql_type = BigInt)]
    updated: i64,
    #[diesel(sql_type = BigInt)]
    hot_updated: i64,
    #[diesel(sql_type = BigInt)]
    deleted: i64,
}

#[derive(QueryableByName)]
struct TableCounts {
    #[diesel(sql_type = Text)]
    table: String,
    #[diesel(embed)]
    counts: Counts,
}

#[derive(QueryableByName)]
struct Lsn {
    #[diesel(sql_type = Text)]
    lsn: String,
}

#[derive(QueryableByName)]
struct WalKind {
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = BigInt)]
    count: i64,
    #[diesel(sql_type = BigInt)]
    record_bytes: i64,
    #[diesel(sql_type = BigInt)]
    fpi_bytes: i64,
}

/// Per request: WAL and rows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Writes {
    pub requests: usize,
    pub wal_record_bytes: f64,
    pub wal_fpi_bytes: f64,
    pub wal_records: f64,
    /// Resource manager and record type (`Heap/HOT_UPDATE`, ...): records
    /// and record bytes per request, largest first.
    pub wal_by_kind: Vec<(String, f64, f64)>,
    /// Table: rows inserted, updated, of which HOT, and deleted, per request.
    pub rows: BTreeMap<String, RowsPerRequest>,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct RowsPerRequest {
    pub inserted: f64,
    pub updated: f64,
    pub hot_updated: f64,
    pub deleted: f64,
}

/// Make `pg_walinspect` available in the benchmark's database (it needs a
/// superuser, as the benchmark's server user is).
pub async fn prepare(pool: &DbPool) -> anyhow::Result<()> {
    let mut conn = pool.get().await?;
    conn.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
        .await?;
    Ok(())
}

/// Wait (up to 10 s) until the worker's backends have exited: a backend
/// reports its row counts as it exits, which is after the worker process
/// has (the server notices the closed socket), and a count reported after
/// the second snapshot would land in the next run's figures.
pub async fn wait_for_worker_sessions_to_end(pool: &DbPool) -> anyhow::Result<()> {
    #[derive(QueryableByName)]
    struct Sessions {
        #[diesel(sql_type = BigInt)]
        sessions: i64,
    }
    let mut conn = pool.get().await?;
    for _ in 0..100 {
        conn.batch_execute("SELECT pg_stat_clear_snapshot()")
            .await?;
        let open: Sessions = diesel::sql_query(
            "SELECT count(*) AS sessions FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = 'disconnect-worker'",
        )
        .get_result(&mut conn)
        .await?;
        if open.sessions == 0 {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    anyhow::bail!("the worker's database sessions did not end within 10 s")
}

pub async fn snapshot(pool: &DbPool) -> anyhow::Result<Snapshot> {
    let mut conn = pool.get().await?;
    let lsn: Lsn = diesel::sql_query("SELECT pg_current_wal_flush_lsn()::text AS lsn")
        .get_result(&mut conn)
        .await?;
    Ok(Snapshot {
        lsn: lsn.lsn,
        tables: table_counts(&mut conn).await?,
    })
}

async fn table_counts(conn: &mut AsyncPgConnection) -> anyhow::Result<BTreeMap<String, Counts>> {
    // This session's own pending counts would lag otherwise.
    conn.batch_execute("SELECT pg_stat_clear_snapshot()")
        .await?;
    let rows: Vec<TableCounts> = diesel::sql_query(
        "SELECT relname::text AS table, n_tup_ins AS inserted, n_tup_upd AS updated, \
         n_tup_hot_upd AS hot_updated, n_tup_del AS deleted FROM pg_stat_user_tables",
    )
    .load(conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter(|row| TABLES.contains(&row.table.as_str()))
        .map(|row| (row.table, row.counts))
        .collect())
}

/// What was written between `before` and `after`, per request.
pub async fn between(
    pool: &DbPool,
    before: &Snapshot,
    after: &Snapshot,
    requests: usize,
) -> anyhow::Result<Writes> {
    let mut conn = pool.get().await?;
    let kinds: Vec<WalKind> = diesel::sql_query(
        "SELECT \"resource_manager/record_type\" AS kind, count::bigint AS count, \
         record_size::bigint AS record_bytes, fpi_size::bigint AS fpi_bytes \
         FROM pg_get_wal_stats($1::pg_lsn, $2::pg_lsn, true) WHERE count > 0 \
         ORDER BY record_size DESC",
    )
    .bind::<Text, _>(&before.lsn)
    .bind::<Text, _>(&after.lsn)
    .load(&mut conn)
    .await?;
    let per = |value: i64| value as f64 / requests.max(1) as f64;
    let mut rows = BTreeMap::new();
    for table in TABLES {
        let start = before.tables.get(table).copied().unwrap_or_default();
        let end = after.tables.get(table).copied().unwrap_or_default();
        rows.insert(
            table.to_string(),
            RowsPerRequest {
                inserted: per(end.inserted - start.inserted),
                updated: per(end.updated - start.updated),
                hot_updated: per(end.hot_updated - start.hot_updated),
                deleted: per(end.deleted - start.deleted),
            },
        );
    }
    Ok(Writes {
        requests,
        wal_record_bytes: per(kinds.iter().map(|kind| kind.record_bytes).sum()),
        wal_fpi_bytes: per(kinds.iter().map(|kind| kind.fpi_bytes).sum()),
        wal_records: per(kinds.iter().map(|kind| kind.count).sum()),
        wal_by_kind: kinds
            .iter()
            .map(|kind| (kind.kind.clone(), per(kind.count), per(kind.record_bytes)))
            .collect(),
        rows,
    })
}
