//! Postgres's CPU per request on the worker's batch path alone: no broker,
//! no worker process, so the figure moves far less from run to run than the
//! benchmark's CPU table, and a change to the batch's statements can be
//! judged by it before a full benchmark run.
//!
//! Seeds a database of its own (`--connections` connections of 5 tokens),
//! disconnects a quarter of them to warm the tables, vacuums and analyzes,
//! then disconnects the rest in batches of `--batch` through
//! `record_disconnects` from `--sessions` concurrent sessions, and reads
//! those sessions' backends' CPU time from /proc (so Postgres must run on
//! this machine). With `--explain`, the sessions instead run 100 batches
//! with `auto_explain` logging each statement's duration (superuser only; the
//! durations are in the server's log, `scripts/explain-durations.py` sums
//! them per statement).
//!
//! `cargo run --release -p disconnect-bench --example batch_postgres_cpu -- --sessions 8`

use std::sync::{Arc, Mutex};
use std::time::Instant;

use clap::Parser;
use diesel::sql_types::{BigInt, Integer, Text};
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use disconnect_testkit::services::admin_url;
use disconnect_testkit::TestDatabase;
use disconnect_worker::config::DEFAULT_DATABASE_URL;
use disconnect_worker::domain::{AccessToken, DisconnectRequest};
use disconnect_worker::service::{record_disconnects, Policy};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 20_000)]
    connections: usize,
    /// Requests per transaction.
    #[arg(long, default_value_t = 48)]
    batch: usize,
    /// Concurrent sessions (the worker's `DATABASE_POOL_SIZE` is 8).
    #[arg(long, default_value_t = 8)]
    sessions: usize,
    /// Log each statement's duration with auto_explain instead of measuring.
    #[arg(long)]
    explain: bool,
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true)]
    database_url: String,
}

#[derive(diesel::QueryableByName)]
struct BackendPid {
    #[diesel(sql_type = Integer)]
    pid: i32,
}

/// Nanoseconds a process has run on a CPU.
fn cpu_ns(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let database = TestDatabase::create(&admin_url(&args.database_url), "batch_cpu").await?;
    let result = measure(&args, &database).await;
    database.drop_database().await;
    result
}

async fn measure(args: &Args, database: &TestDatabase) -> anyhow::Result<()> {
    let pool = database.pool_named(args.sessions + 1, "batch-postgres-cpu");
    let mut conn = pool.get().await?;
    diesel::sql_query(
        "INSERT INTO connections (id, client_id, company_id, provider_id, status) \
         SELECT gen_random_uuid(), 'probe', i::text, 'gusto', 'active' \
         FROM generate_series(1, $1) AS i",
    )
    .bind::<BigInt, _>(i64::try_from(args.connections)?)
    .execute(&mut conn)
    .await?;
    diesel::sql_query(
        "INSERT INTO access_tokens (id, connection_id, token_hash, token_prefix) \
         SELECT gen_random_uuid(), c.id, \
                sha256(convert_to('probe-' || c.company_id || '-' || j, 'UTF8')), $1 \
         FROM connections AS c, generate_series(1, 5) AS j",
    )
    .bind::<Text, _>("probe")
    .execute(&mut conn)
    .await?;
    let requests = (1..=args.connections)
        .map(|company| {
            let token = format!("probe-{company}-{}", 1 + company % 5);
            AccessToken::parse(token)
                .map(DisconnectRequest::new)
                .map_err(anyhow::Error::msg)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (warm_up, measured) = requests.split_at(args.connections / 4);
    for batch in warm_up.chunks(args.batch) {
        record_disconnects(&mut conn, batch, &Policy::default()).await?;
    }
    conn.batch_execute("VACUUM ANALYZE").await?;
    drop(conn);
    // New sessions: their plans are made on the analyzed tables.
    pool.retain(|_, _| false);
    let mut sessions = Vec::new();
    let mut backends = Vec::new();
    for _ in 0..args.sessions {
        let mut session = pool.get().await?;
        let backend: BackendPid = diesel::sql_query("SELECT pg_backend_pid() AS pid")
            .get_result(&mut session)
            .await?;
        backends.push(backend.pid);
        sessions.push(session);
    }
    if args.explain {
        let session = &mut sessions[0];
        session
            .batch_execute(
                "LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0; \
                 SET auto_explain.log_analyze = on; SET auto_explain.log_timing = off",
            )
            .await?;
        for batch in measured.chunks(args.batch).take(100) {
            record_disconnects(session, batch, &Policy::default()).await?;
        }
        println!(
            "100 batches of {}: durations are in the server log",
            args.batch
        );
        return Ok(());
    }
    let batches = Arc::new(Mutex::new(
        measured
            .chunks(args.batch)
            .map(<[_]>::to_vec)
            .collect::<Vec<_>>(),
    ));
    let backends_cpu = || backends.iter().map(|pid| cpu_ns(*pid)).sum::<u64>();
    let cpu_before = backends_cpu();
    let started = Instant::now();
    let tasks: Vec<_> = sessions
        .into_iter()
        .map(|mut session| {
            let batches = batches.clone();
            tokio::spawn(async move {
                loop {
                    let next = batches
                        .lock()
                        .map_err(|_| anyhow::anyhow!("poisoned"))?
                        .pop();
                    let Some(batch) = next else {
                        return Ok::<_, anyhow::Error>(());
                    };
                    record_disconnects(&mut session, &batch, &Policy::default()).await?;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu_us = (backends_cpu() - cpu_before) as f64 / 1000.0;
    println!(
        "{} requests in batches of {} from {} sessions: Postgres {:.1} us of CPU per request, \
         {:.0} requests/s",
        measured.len(),
        args.batch,
        args.sessions,
        cpu_us / measured.len() as f64,
        measured.len() as f64 / seconds,
    );
    Ok(())
}
