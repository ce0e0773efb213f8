//! A production-sized population (`--population-tokens`): millions of
//! tokens in a database seeded once, in bulk, and kept between runs, so
//! that each measured request looks up a token among all of them, mostly
//! outside `shared_buffers`, as in production. The default run's 100,000
//! tokens all sit in memory.
//!
//! The population is one application's connections, each with
//! `--tokens-per-connection` tokens, with time-ordered ids (UUIDv7, as the
//! worker and `token issue` make them) written in id order, as years of
//! `token issue` would. Token `j` of company `i` is the text
//! `bench-pop-<i>-<j>`, hashed in SQL as the worker hashes a token, so a
//! run can name any of them. The database's name carries the size and the
//! migrations' digest, so a schema change seeds a new one; a run
//! disconnects only `--connections` of the population (1 % of 2 M), picked
//! at random among those still active.

use std::time::Instant;

use diesel::sql_types::{BigInt, Text};
use diesel::QueryableByName;
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use disconnect_worker::db::setup::MIGRATIONS_DIGEST;
use disconnect_worker::db::DbPool;
use rand::Rng;
use serde::Serialize;

/// The application the population belongs to.
const CLIENT: &str = "pop";
/// Connections seeded per statement.
const CHUNK: i64 = 100_000;

/// A time-ordered UUID (version 7) from the clock, in SQL: Postgres 15 has
/// no `uuidv7()`.
const UUID_V7: &str = "encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid()) \
     placing substring(int8send((extract(epoch from clock_timestamp()) * 1000)::bigint) from 3) \
     from 1 for 6), 52, 1), 53, 1), 'hex')::uuid";

/// The version of the seed's shape: a new one seeds a new database.
const SHAPE: u32 = 2;

/// The kept database's name for a population of this shape.
pub fn database_name(tokens: usize, tokens_per_connection: usize) -> String {
    format!(
        "disconnect_bench_pop{SHAPE}_{tokens}_{tokens_per_connection}_{}",
        &MIGRATIONS_DIGEST[..12]
    )
}

/// Whether the population is complete (a seed that died half-way is not).
pub async fn is_seeded(pool: &DbPool) -> anyhow::Result<bool> {
    #[derive(QueryableByName)]
    struct Found {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        found: bool,
    }
    let mut conn = pool.get().await?;
    let found: Found =
        diesel::sql_query("SELECT to_regclass('bench_population') IS NOT NULL AS found")
            .get_result(&mut conn)
            .await?;
    Ok(found.found)
}

/// Seed `tokens` tokens, `tokens_per_connection` to a connection, then
/// vacuum and mark the population complete.
pub async fn seed(
    pool: &DbPool,
    tokens: usize,
    tokens_per_connection: usize,
) -> anyhow::Result<()> {
    let connections = tokens.div_ceil(tokens_per_connection) as i64;
    let started = Instant::now();
    let mut conn = pool.get().await?;
    // A half-seeded population is started again from nothing.
    conn.batch_execute("TRUNCATE access_tokens, connections CASCADE")
        .await?;
    let statement = format!(
        "WITH c AS (\
           INSERT INTO connections (id, client_id, company_id, provider_id, status) \
           SELECT {UUID_V7}, '{CLIENT}', i::text, 'gusto', 'active' \
           FROM generate_series($1::bigint, $2::bigint) AS i ORDER BY i \
           RETURNING id, company_id) \
         INSERT INTO access_tokens (id, connection_id, token_hash, token_prefix, user_label, products) \
         SELECT {UUID_V7}, c.id, \
                sha256(convert_to('bench-{CLIENT}-' || c.company_id || '-' || j, 'UTF8')), \
                'dwt_' || substr(md5(c.id::text || j), 1, 4), 'user-' || j, \
                '{{company,directory,individual}}' \
         FROM c, generate_series(1, $3::bigint) AS j ORDER BY c.id, j"
    );
    let mut first = 1;
    while first <= connections {
        let last = (first + CHUNK - 1).min(connections);
        diesel::sql_query(&statement)
            .bind::<BigInt, _>(first)
            .bind::<BigInt, _>(last)
            .bind::<BigInt, _>(tokens_per_connection as i64)
            .execute(&mut conn)
            .await?;
        eprintln!(
            "  {} of {connections} connections ({:.0} s)",
            last,
            started.elapsed().as_secs_f64()
        );
        first = last + 1;
    }
    eprintln!("  vacuuming...");
    conn.batch_execute("VACUUM (ANALYZE) connections, access_tokens")
        .await?;
    conn.batch_execute(&format!(
        "CREATE TABLE bench_population AS SELECT {tokens}::bigint AS tokens, now() AS seeded_at"
    ))
    .await?;
    eprintln!("  seeded in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Remove what earlier runs seeded beside the population (their own
/// connections, for the baselines) and vacuum, so the figures at rest are
/// the population's. Connections of the population that earlier runs
/// disconnected stay, as they would in production until retention.
pub async fn tidy(pool: &DbPool) -> anyhow::Result<()> {
    let mut conn = pool.get().await?;
    conn.batch_execute(&format!(
        "DELETE FROM connection_entities WHERE connection_id IN \
           (SELECT id FROM connections WHERE client_id <> '{CLIENT}'); \
         DELETE FROM access_tokens WHERE connection_id IN \
           (SELECT id FROM connections WHERE client_id <> '{CLIENT}'); \
         DELETE FROM connections WHERE client_id <> '{CLIENT}'"
    ))
    .await?;
    // Alone: several statements in one string are one transaction, which
    // VACUUM refuses.
    conn.batch_execute("VACUUM (ANALYZE) connections, access_tokens")
        .await?;
    Ok(())
}

/// `count` active connections of the population, picked uniformly at
/// random, and one random token of each.
pub async fn pick(
    pool: &DbPool,
    count: usize,
    tokens_per_connection: usize,
) -> anyhow::Result<Vec<String>> {
    #[derive(QueryableByName)]
    struct Company {
        #[diesel(sql_type = Text)]
        company_id: String,
    }
    let mut conn = pool.get().await?;
    let companies: Vec<Company> = diesel::sql_query(
        "SELECT company_id FROM connections WHERE client_id = $1 AND status = 'active' \
         ORDER BY random() LIMIT $2",
    )
    .bind::<Text, _>(CLIENT)
    .bind::<BigInt, _>(count as i64)
    .load(&mut conn)
    .await?;
    anyhow::ensure!(
        companies.len() == count,
        "the population has only {} active connections left: seed a new one",
        companies.len()
    );
    let mut rng = rand::rng();
    Ok(companies
        .into_iter()
        .map(|company| {
            format!(
                "bench-{CLIENT}-{}-{}",
                company.company_id,
                rng.random_range(1..=tokens_per_connection)
            )
        })
        .collect())
}

/// The population at rest: what it takes on disk, and the memory it has.
#[derive(Debug, Clone, Serialize)]
pub struct AtRest {
    pub tokens: i64,
    pub connections: i64,
    /// `shared_buffers`, bytes.
    pub shared_buffers_bytes: i64,
    /// Heap (with its TOAST and free-space maps) and indexes of the two
    /// tables, bytes.
    pub tokens_heap_bytes: i64,
    pub tokens_index_bytes: i64,
    pub connections_heap_bytes: i64,
    pub connections_index_bytes: i64,
    /// All four over the tokens.
    pub bytes_per_token: f64,
    /// Blocks `--prewarm` loaded into `shared_buffers` (the most that fit).
    pub prewarmed_blocks: Option<i64>,
}

/// Load the two tables and their indexes into `shared_buffers`, indexes
/// first (every request reads an index page before its heap page); returns
/// the blocks loaded. Once the buffers are full, later relations evict
/// earlier ones, so a cache smaller than the data ends as it would in
/// service: holding part of it.
pub async fn prewarm(pool: &DbPool) -> anyhow::Result<i64> {
    #[derive(QueryableByName)]
    struct Loaded {
        #[diesel(sql_type = BigInt)]
        blocks: i64,
    }
    let started = Instant::now();
    let mut conn = pool.get().await?;
    conn.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        .await?;
    let loaded: Loaded = diesel::sql_query(
        "SELECT coalesce(sum(pg_prewarm(oid)), 0)::bigint AS blocks FROM ( \
           SELECT i.indexrelid AS oid, 0 AS heap FROM pg_index AS i \
           WHERE i.indrelid IN ('access_tokens'::regclass, 'connections'::regclass) \
           UNION ALL SELECT 'connections'::regclass, 1 \
           UNION ALL SELECT 'access_tokens'::regclass, 1 \
           ORDER BY heap) AS relations",
    )
    .get_result(&mut conn)
    .await?;
    eprintln!(
        "population: prewarmed {} blocks in {:.0} s",
        loaded.blocks,
        started.elapsed().as_secs_f64()
    );
    Ok(loaded.blocks)
}

pub async fn at_rest(pool: &DbPool) -> anyhow::Result<AtRest> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        tokens: i64,
        #[diesel(sql_type = BigInt)]
        connections: i64,
        #[diesel(sql_type = BigInt)]
        shared_buffers_bytes: i64,
        #[diesel(sql_type = BigInt)]
        tokens_heap_bytes: i64,
        #[diesel(sql_type = BigInt)]
        tokens_index_bytes: i64,
        #[diesel(sql_type = BigInt)]
        connections_heap_bytes: i64,
        #[diesel(sql_type = BigInt)]
        connections_index_bytes: i64,
    }
    let mut conn = pool.get().await?;
    let row: Row = diesel::sql_query(
        "SELECT (SELECT count(*) FROM access_tokens) AS tokens, \
                (SELECT count(*) FROM connections) AS connections, \
                (SELECT setting::bigint * 8192 FROM pg_settings WHERE name = 'shared_buffers') \
                  AS shared_buffers_bytes, \
                pg_table_size('access_tokens') AS tokens_heap_bytes, \
                pg_indexes_size('access_tokens') AS tokens_index_bytes, \
                pg_table_size('connections') AS connections_heap_bytes, \
                pg_indexes_size('connections') AS connections_index_bytes",
    )
    .get_result(&mut conn)
    .await?;
    let total = row.tokens_heap_bytes
        + row.tokens_index_bytes
        + row.connections_heap_bytes
        + row.connections_index_bytes;
    Ok(AtRest {
        tokens: row.tokens,
        connections: row.connections,
        shared_buffers_bytes: row.shared_buffers_bytes,
        tokens_heap_bytes: row.tokens_heap_bytes,
        tokens_index_bytes: row.tokens_index_bytes,
        connections_heap_bytes: row.connections_heap_bytes,
        connections_index_bytes: row.connections_index_bytes,
        bytes_per_token: total as f64 / row.tokens.max(1) as f64,
        prewarmed_blocks: None,
    })
}

/// Block reads of the two tables and their indexes, as `pg_statio` counts
/// them: `hit` in `shared_buffers`, `read` from the operating system (its
/// page cache or the disk).
#[derive(Debug, Clone, Copy, Default, QueryableByName)]
pub struct Blocks {
    #[diesel(sql_type = BigInt)]
    heap_hit: i64,
    #[diesel(sql_type = BigInt)]
    heap_read: i64,
    #[diesel(sql_type = BigInt)]
    index_hit: i64,
    #[diesel(sql_type = BigInt)]
    index_read: i64,
}

/// Between two [`Blocks`], per request and as hit ratios.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct BufferUse {
    pub heap_hit_ratio: f64,
    pub index_hit_ratio: f64,
    /// Blocks read from outside `shared_buffers`, per request.
    pub reads_per_request: f64,
    /// Blocks found in `shared_buffers`, per request.
    pub hits_per_request: f64,
}

pub async fn blocks(pool: &DbPool) -> anyhow::Result<Blocks> {
    let mut conn = pool.get().await?;
    conn.batch_execute("SELECT pg_stat_clear_snapshot()")
        .await?;
    Ok(diesel::sql_query(
        "SELECT coalesce(sum(heap_blks_hit), 0)::bigint AS heap_hit, \
                coalesce(sum(heap_blks_read), 0)::bigint AS heap_read, \
                coalesce(sum(idx_blks_hit), 0)::bigint AS index_hit, \
                coalesce(sum(idx_blks_read), 0)::bigint AS index_read \
         FROM pg_statio_user_tables WHERE relname IN ('access_tokens', 'connections')",
    )
    .get_result(&mut conn)
    .await?)
}

pub fn between(before: &Blocks, after: &Blocks, requests: usize) -> BufferUse {
    let ratio = |hit: i64, read: i64| {
        let total = hit + read;
        if total == 0 {
            1.0
        } else {
            hit as f64 / total as f64
        }
    };
    let heap_hit = after.heap_hit - before.heap_hit;
    let heap_read = after.heap_read - before.heap_read;
    let index_hit = after.index_hit - before.index_hit;
    let index_read = after.index_read - before.index_read;
    let per_request = |blocks: i64| blocks as f64 / requests.max(1) as f64;
    BufferUse {
        heap_hit_ratio: ratio(heap_hit, heap_read),
        index_hit_ratio: ratio(index_hit, index_read),
        reads_per_request: per_request(heap_read + index_read),
        hits_per_request: per_request(heap_hit + index_hit),
    }
}
