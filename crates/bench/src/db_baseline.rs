//! The database baseline: the worker's revocation work, one transaction per
//! request, from a pool of concurrent connections, no broker.

use disconnect_worker::outbox::OutboxFormat;
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel_async::pooled_connection::deadpool::Object;
use diesel_async::AsyncPgConnection;
use diesel_async::RunQueryDsl;
use disconnect_worker::domain::{AccessToken, DisconnectRequest, Outcome, OutcomeKind};
use disconnect_worker::service::{record_disconnect, record_disconnects, Policy, Processed};
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

/// Seed `--connections` connections of the application `client` and make
/// one request for each, naming one of its tokens.
pub async fn seed_requests(
    args: &Args,
    env: &BenchEnv,
    client: &str,
) -> anyhow::Result<Vec<DisconnectRequest>> {
    env.seed_connections(client, args.connections, args.tokens_per_connection)
        .await?
        .iter()
        .map(|token| request_for(token))
        .collect()
}

pub async fn run(args: &Args, env: &BenchEnv) -> anyhow::Result<DbBaseline> {
    let requests = seed_requests(args, env, "db").await?;
    let count = requests.len();
    let mut sessions = Vec::with_capacity(args.db_concurrency);
    for _ in 0..args.db_concurrency {
        sessions.push(env.pool.get().await?);
    }
    let batches = requests.into_iter().map(|request| vec![request]).collect();
    let cpu_before = cpu::snapshot();
    let started = Instant::now();
    let disconnected = drain(sessions, batches).await?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_before.per_thousand(&cpu::snapshot(), count);
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
        disconnected == count,
        "only {disconnected} of {} disconnected",
        count
    );
    Ok(DbBaseline {
        cpu,
        requests: count,
        seconds,
        requests_per_second: count as f64 / seconds,
    })
}

/// Process `batches`, each in one transaction, from `sessions` at once:
/// each session takes the next batch when it is done. Returns how many
/// requests disconnected their connection.
pub async fn drain(
    sessions: Vec<Object<AsyncPgConnection>>,
    batches: Vec<Vec<DisconnectRequest>>,
) -> anyhow::Result<usize> {
    let queue = Arc::new(Mutex::new(batches));
    let workers: Vec<_> = sessions
        .into_iter()
        .map(|mut conn| {
            let queue = queue.clone();
            tokio::spawn(async move {
                let mut disconnected = 0usize;
                loop {
                    let Some(batch) = queue.lock().await.pop() else {
                        return Ok::<_, anyhow::Error>(disconnected);
                    };
                    let committed = record_disconnects(
                        &mut conn,
                        &batch,
                        &Policy::default(),
                        OutboxFormat::ByReference,
                    )
                    .await?;
                    disconnected += committed
                        .processed
                        .iter()
                        .filter(|processed| processed.kind() == Some(OutcomeKind::Disconnected))
                        .count();
                }
            })
        })
        .collect();
    let mut disconnected = 0;
    for worker in workers {
        disconnected += worker.await??;
    }
    Ok(disconnected)
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
    let processed = record_disconnect(
        &mut conn,
        &request,
        &Policy::default(),
        OutboxFormat::ByReference,
    )
    .await?;
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
