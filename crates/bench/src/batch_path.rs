//! Postgres's CPU per request on the worker's batch path alone: no broker,
//! no worker process, so the figure moves far less from run to run than the
//! CPU table of a full run, and a change to a batch's statements can be
//! judged by it first.
//!
//! A quarter of the seeded connections are disconnected first, to warm the
//! tables; then they are vacuumed and analyzed, and the rest are
//! disconnected in batches of `--batch-size` from `--pool-size` new
//! sessions, whose backends' CPU time is read from /proc (Postgres must run
//! on this machine). With `--explain`, one session runs 100 batches with
//! `auto_explain` logging each statement's duration instead (superuser
//! only; `scripts/explain-durations.py` sums the server log per statement).

use disconnect_worker::outbox::OutboxFormat;
use std::time::Instant;

use diesel::sql_types::Integer;
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use disconnect_worker::service::{record_disconnects, Policy};
use serde::Serialize;

use super::db_baseline::{drain, seed_requests};
use super::seed::BenchEnv;
use super::Args;

#[derive(Debug, Clone, Serialize)]
pub struct BatchPath {
    pub requests: usize,
    pub batch_size: usize,
    pub sessions: usize,
    /// CPU of the sessions' backends, in microseconds per request.
    pub postgres_us_per_request: f64,
    pub requests_per_second: f64,
}

#[derive(diesel::QueryableByName)]
struct BackendPid {
    #[diesel(sql_type = Integer)]
    pid: i32,
}

/// Nanoseconds a process has run on a CPU. Not `cpu.rs`'s clock ticks: the
/// measured backends use about a second of CPU in all, and whole 10 ms ticks
/// per backend would move this figure by several per cent.
fn cpu_ns(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// `None` with `--explain`: the durations are in the server's log.
pub async fn run(args: &Args, env: &BenchEnv) -> anyhow::Result<Option<BatchPath>> {
    let requests = seed_requests(args, env, "batch").await?;
    let batch_size = usize::from(args.batch_size);
    let (warm_up, measured) = requests.split_at(requests.len() / 4);
    let mut conn = env.pool.get().await?;
    for batch in warm_up.chunks(batch_size) {
        record_disconnects(
            &mut conn,
            batch,
            &Policy::default(),
            OutboxFormat::ByReference,
        )
        .await?;
    }
    conn.batch_execute("VACUUM ANALYZE").await?;
    drop(conn);
    // New sessions: their plans are made on the analyzed tables.
    env.pool.retain(|_, _| false);
    let mut sessions = Vec::new();
    let mut backends = Vec::new();
    for _ in 0..args.pool_size {
        let mut session = env.pool.get().await?;
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
        for batch in measured.chunks(batch_size).take(100) {
            record_disconnects(
                session,
                batch,
                &Policy::default(),
                OutboxFormat::ByReference,
            )
            .await?;
        }
        return Ok(None);
    }
    let batches = measured.chunks(batch_size).map(<[_]>::to_vec).collect();
    let backends_cpu = || backends.iter().map(|pid| cpu_ns(*pid)).sum::<u64>();
    let cpu_before = backends_cpu();
    let started = Instant::now();
    let disconnected = drain(sessions, batches).await?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu_ns_used = backends_cpu() - cpu_before;
    anyhow::ensure!(
        disconnected == measured.len(),
        "only {disconnected} of {} disconnected",
        measured.len()
    );
    Ok(Some(BatchPath {
        requests: measured.len(),
        batch_size,
        sessions: usize::from(args.pool_size),
        postgres_us_per_request: cpu_ns_used as f64 / 1000.0 / measured.len() as f64,
        requests_per_second: measured.len() as f64 / seconds,
    }))
}

pub fn print(result: &Option<BatchPath>) {
    match result {
        None => println!("100 batches run under auto_explain: the durations are in the server log"),
        Some(result) => println!(
            "{} requests in batches of {} from {} sessions: Postgres {:.1} us of CPU per request, \
             {:.0} requests/s",
            result.requests,
            result.batch_size,
            result.sessions,
            result.postgres_us_per_request,
            result.requests_per_second,
        ),
    }
}
