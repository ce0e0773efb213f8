//! The database baseline: the worker's revocation work, one transaction per
//! request, from a pool of concurrent connections, no broker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel_async::RunQueryDsl;
use disconnect_worker::domain::{AccessToken, DisconnectRequest, Outcome, OutcomeKind};
use disconnect_worker::service::{record_disconnect, Policy, Processed};
use serde::Serialize;
use tokio::sync::Mutex;

use super::cpu::{self, CpuUse};
use super::seed::BenchEnv;
use super::Args;

#[derive(Debug, Clone, Serialize)]
pub struct DbBaseline {
    /// CPU used while the run was measured.
    pub cpu: CpuUse,
    pub requests: usize,
    pub seconds: f64,
    pub requests_per_second: f64,
}

pub fn request_for(token: &str) -> anyhow::Result<DisconnectRequest> {
    Ok(DisconnectRequest {
        requested_by: Some("disconnect-bench".into()),
        ..DisconnectRequest::new(AccessToken::parse(token.to_string()).map_err(anyhow::Error::msg)?)
    })
}

pub async fn run(args: &Args, env: &BenchEnv) -> anyhow::Result<DbBaseline> {
    let tokens = env
        .seed_connections("db", args.connections, args.tokens_per_connection)
        .await?;
    let requests = tokens
        .iter()
        .map(|token| request_for(token))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let queue = Arc::new(Mutex::new(requests));
    let cpu_before = cpu::snapshot();
    let started = Instant::now();
    let workers: Vec<_> = (0..args.db_concurrency)
        .map(|_| {
            let queue = queue.clone();
            let pool = env.pool.clone();
            tokio::spawn(async move {
                let mut disconnected = 0usize;
                loop {
                    let Some(request) = queue.lock().await.pop() else {
                        return Ok::<_, anyhow::Error>(disconnected);
                    };
                    let mut conn = pool.get().await?;
                    if record_disconnect(&mut conn, &request, &Policy::default())
                        .await?
                        .kind()
                        == OutcomeKind::Disconnected
                    {
                        disconnected += 1;
                    }
                }
            })
        })
        .collect();
    let mut disconnected = 0;
    for worker in workers {
        disconnected += worker.await??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_before.per_thousand(&cpu::snapshot(), tokens.len());
    // The baseline has no publisher: delete its events, or the workers of
    // the later phases would publish them during their runs.
    let mut conn = env.pool.get().await?;
    diesel::sql_query("DELETE FROM outbox_events")
        .execute(&mut conn)
        .await?;
    // Both of the outbox's tables: a worker of a version before
    // `outbox_disconnections` leaves it empty, so this is a no-op for it.
    diesel::sql_query("DELETE FROM outbox_disconnections")
        .execute(&mut conn)
        .await?;
    drop(conn);
    // Close the baseline's sessions: a session reports its row counts to
    // the statistics when it ends, or up to 10 s after its last statement,
    // which would put the baseline's rows into the next run's figures.
    env.pool.retain(|_, _| false);
    anyhow::ensure!(
        disconnected == tokens.len(),
        "only {disconnected} of {} disconnected",
        tokens.len()
    );
    Ok(DbBaseline {
        cpu,
        requests: tokens.len(),
        seconds,
        requests_per_second: tokens.len() as f64 / seconds,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct LargeConnection {
    pub tokens_revoked: usize,
    pub milliseconds: f64,
}

/// One connection with many tokens, revoked by one request: one statement.
pub async fn revoke_large_connection(
    args: &Args,
    env: &BenchEnv,
) -> anyhow::Result<LargeConnection> {
    let tokens = env
        .seed_connections("large", 1, args.large_connection_tokens)
        .await?;
    let request = request_for(&tokens[0])?;
    let mut conn = env.pool.get().await?;
    let started = Instant::now();
    let processed = record_disconnect(&mut conn, &request, &Policy::default()).await?;
    let elapsed: Duration = started.elapsed();
    let Processed::Recorded(Outcome::Disconnected {
        revoked_token_ids, ..
    }) = processed
    else {
        anyhow::bail!("the large connection was not disconnected: {processed:?}");
    };
    Ok(LargeConnection {
        tokens_revoked: revoked_token_ids.len(),
        milliseconds: elapsed.as_secs_f64() * 1000.0,
    })
}
