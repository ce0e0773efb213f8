//! The webhook dispatcher alone (`disconnect-worker deliver`): events
//! published straight to the event exchange for one application whose
//! endpoints are loopback receivers in this process, all answering 200 at
//! once but one that never answers. How many deliveries a dispatcher makes
//! a second, what latency a paced stream sees from publish to receipt, and
//! what the dispatcher holds in memory and spends in CPU.
//!
//!   disconnect-bench --webhooks --webhook-receivers 4 --webhook-events 20000 --json webhooks.json

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use diesel::sql_types::BigInt;
use disconnect_testkit::broker::{self, unique_topology};
use disconnect_testkit::process::{worker_env, Logs};
use disconnect_testkit::WorkerProcess;
use disconnect_worker::broker::Topology;
use lapin::options::QueueDeleteOptions;
use serde::Serialize;
use tokio::io::AsyncReadExt;
use tokio::task::{JoinHandle, JoinSet};
use uuid::Uuid;

use super::amqp;
use super::cpu::{self, CpuUse};
use super::end_to_end::{memory_mib, worker_binary};
use super::seed::BenchEnv;
use super::stats::Latency;
use super::Args;

/// The application every endpoint belongs to and every event names.
const APPLICATION: &str = "bench-webhooks";
const EVENT_TYPE: &str = "connection.disconnected";
/// The operator's key that seals the endpoints' secrets: 32 bytes of 0x2a,
/// as in the integration tests (nothing here is secret).
const SECRET_KEY: &str = "KioqKioqKioqKioqKioqKioqKioqKioqKioqKioqKio=";
/// The dispatcher's defaults (`WEBHOOK_CONCURRENCY`,
/// `WEBHOOK_ENDPOINT_CONCURRENCY`, `WEBHOOK_TIMEOUT_SECS`): the bench sets
/// none of them.
const CONCURRENCY: usize = 64;
const ENDPOINT_CONCURRENCY: usize = 4;
const ATTEMPT_TIMEOUT_SECS: f64 = 15.0;
/// A phase fails when no live receiver got anything for this long.
const STALL: Duration = Duration::from_secs(120);

#[derive(Debug, Serialize)]
pub struct Report {
    pub webhooks: WebhookBench,
}

#[derive(Debug, Clone, Serialize)]
pub struct WebhookBench {
    /// Receivers answering 200 at once, each an endpoint of the application.
    pub live_receivers: usize,
    /// Receivers that never answer (the dispatcher's timeout ends each
    /// attempt), also endpoints of the application.
    pub dead_receivers: usize,
    /// Dispatcher processes measured: the figures are per dispatcher.
    pub dispatchers: usize,
    /// The dispatcher's settings in force (its defaults).
    pub concurrency: usize,
    pub endpoint_concurrency: usize,
    pub attempt_timeout_secs: f64,
    pub event_bytes: usize,
    pub saturating: Saturating,
    pub paced: Paced,
    pub dead_receiver: DeadReceiver,
    pub memory: Memory,
}

/// Every event published as fast as the broker confirms.
#[derive(Debug, Clone, Serialize)]
pub struct Saturating {
    pub events: usize,
    /// 2xx answers of the live receivers (each event's, to each of them).
    pub live_deliveries: usize,
    /// Requests a live receiver got for an event it had already received.
    pub duplicates: usize,
    /// From the first publish to the last confirm.
    pub publish_seconds: f64,
    /// From the first publish until every event was recorded in Postgres
    /// (`webhook_messages`): the intake alone.
    pub intake_seconds: f64,
    pub intake_events_per_second: f64,
    /// Live deliveries already received when the intake had taken in the
    /// last event.
    pub live_deliveries_at_intake_end: usize,
    /// From the first publish to the last live receiver's receipt.
    pub seconds: f64,
    pub deliveries_per_second: f64,
    /// Events delivered to every live receiver a second; each also makes a
    /// delivery to the dead receiver.
    pub events_per_second: f64,
    /// CPU per 1,000 live deliveries.
    pub cpu: Cpu,
    /// CPU cores busy on average over the phase.
    pub cores: Cores,
}

/// Half the saturating event rate, for `--webhook-paced-secs`.
#[derive(Debug, Clone, Serialize)]
pub struct Paced {
    pub offered_events_per_second: f64,
    pub events: usize,
    pub live_deliveries: usize,
    pub duplicates: usize,
    /// From the first publish to the last live receiver's receipt.
    pub seconds: f64,
    /// From each event's publish (as the bench sent it) to its receipt, per
    /// live delivery.
    pub latency: Latency,
    /// Live deliveries that took more than a second from publish to
    /// receipt.
    pub over_one_second: usize,
    pub cpu: Cpu,
    pub cores: Cores,
    /// Requests the dead receiver got during the phase.
    pub dead_receiver_requests: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeadReceiver {
    /// Requests it got over the whole run (each held until the timeout).
    pub requests: usize,
    /// Most requests it held open at once: the dispatcher's
    /// WEBHOOK_ENDPOINT_CONCURRENCY at most.
    pub peak_open: usize,
}

/// Resident memory of the dispatcher, MiB.
#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    /// Once it was ready, before any event.
    pub rss_at_ready_mib: f64,
    /// The highest VmRSS sampled every 100 ms over the run.
    pub peak_rss_mib: f64,
    /// VmHWM at the end, before it was stopped.
    pub hwm_mib: f64,
}

/// Milliseconds of CPU per 1,000 live deliveries, by process group.
#[derive(Debug, Clone, Serialize)]
pub struct Cpu {
    pub dispatcher_ms: f64,
    pub postgres_ms: f64,
    pub rabbitmq_ms: f64,
    /// This program: the publisher and the receivers.
    pub bench_ms: f64,
    pub machine_ms: f64,
    /// The machine's busy time that none of the groups above account for:
    /// the kernel's own threads, processes that exited during the phase
    /// (Postgres's autovacuum workers), and anything else running on the
    /// machine, which makes the run's figures suspect when large.
    pub unattributed_ms: f64,
    /// The dispatcher's, in CPU seconds per 1,000 deliveries.
    pub dispatcher_seconds_per_1000_deliveries: f64,
}

/// Average cores busy over a phase, by process group.
#[derive(Debug, Clone, Serialize)]
pub struct Cores {
    pub dispatcher: f64,
    pub postgres: f64,
    pub rabbitmq: f64,
    pub bench: f64,
    pub machine: f64,
    pub unattributed: f64,
}

impl Cpu {
    fn of(used: &CpuUse) -> Self {
        Self {
            dispatcher_ms: used.worker_ms,
            postgres_ms: used.postgres_ms,
            rabbitmq_ms: used.rabbitmq_ms,
            bench_ms: used.bench_ms,
            machine_ms: used.machine_ms,
            unattributed_ms: (used.machine_ms
                - used.worker_ms
                - used.postgres_ms
                - used.rabbitmq_ms
                - used.bench_ms)
                .max(0.0),
            dispatcher_seconds_per_1000_deliveries: used.worker_ms / 1000.0,
        }
    }

    /// Cores busy when `deliveries` took `seconds`.
    fn cores(&self, deliveries: usize, seconds: f64) -> Cores {
        let scale = deliveries as f64 / 1000.0 / 1000.0 / seconds.max(f64::MIN_POSITIVE);
        Cores {
            dispatcher: self.dispatcher_ms * scale,
            postgres: self.postgres_ms * scale,
            rabbitmq: self.rabbitmq_ms * scale,
            bench: self.bench_ms * scale,
            machine: self.machine_ms * scale,
            unattributed: self.unattributed_ms * scale,
        }
    }
}

pub async fn run(args: &Args, env: &BenchEnv) -> anyhow::Result<WebhookBench> {
    anyhow::ensure!(
        args.webhook_receivers > 0,
        "--webhook-receivers must be 1 or more"
    );
    anyhow::ensure!(
        args.webhook_events > 0,
        "--webhook-events must be 1 or more"
    );
    let topology = unique_topology("bench-webhooks");
    let queue = format!("{}.webhooks", topology.event_exchange);
    let (connection, channel) = broker::connect(&args.amqp_url).await?;
    topology.declare(&channel).await?;
    let result = measure(args, env, &topology, &queue, &connection).await;
    // The dispatcher is stopped by now (inside `measure`): nothing
    // declares the queue again.
    let _ = channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    topology.delete(&channel).await;
    let _ = connection.close(200, "done".into()).await;
    result
}

async fn measure(
    args: &Args,
    env: &BenchEnv,
    topology: &Topology,
    queue: &str,
    connection: &lapin::Connection,
) -> anyhow::Result<WebhookBench> {
    let event_exchange = topology.event_exchange.as_str();
    let binary = worker_binary(args)?;
    let live: Vec<LiveReceiver> = {
        let mut live = Vec::with_capacity(args.webhook_receivers);
        for _ in 0..args.webhook_receivers {
            live.push(LiveReceiver::start().await?);
        }
        live
    };
    let dead = DeadReceiverHandle::start().await?;

    // The dispatcher's settings, and the CLI's (it reads what it needs).
    let mut settings = worker_env(&env.database.url, &args.amqp_url, topology);
    settings.extend([
        ("WEBHOOK_QUEUE", queue.to_string()),
        ("WEBHOOK_SECRET_KEY", SECRET_KEY.to_string()),
        ("WEBHOOK_ALLOWED_CIDRS", "127.0.0.0/8".to_string()),
        ("WEBHOOK_ALLOW_HTTP", "true".to_string()),
        ("RUST_LOG", "warn".to_string()),
    ]);
    let dead_receivers = usize::from(!args.webhook_without_dead_receiver);
    eprintln!(
        "registering {} live receivers and {dead_receivers} dead one(s) as endpoints of `{APPLICATION}`...",
        live.len()
    );
    let dead_url = (dead_receivers == 1).then(|| dead.url.clone());
    for url in live
        .iter()
        .map(|receiver| receiver.url.clone())
        .chain(dead_url)
    {
        add_endpoint(&binary, &settings, &url).await?;
    }

    let dispatcher = WorkerProcess::spawn_command(&binary, "deliver", &settings, Logs::Inherit)
        .context("starting the dispatcher")?
        .terminate_on_drop();
    let pid = dispatcher.pid();
    wait_until_ready(&dispatcher, Duration::from_secs(30)).await?;
    let (rss_at_ready_mib, _) = memory_mib(pid).unwrap_or_default();

    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn({
        let sampling = sampling.clone();
        async move {
            let mut peak: f64 = 0.0;
            while sampling.load(Ordering::Relaxed) {
                let Some((rss, _)) = memory_mib(pid) else {
                    break;
                };
                peak = peak.max(rss);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            peak
        }
    });

    let channel = connection.create_channel().await?;
    let phases = async {
        eprintln!(
            "saturating: {} events, each to {} live endpoints and {dead_receivers} dead one(s)...",
            args.webhook_events,
            live.len()
        );
        let saturating = saturate(args, env, &channel, event_exchange, &live).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rate = saturating.events_per_second / 2.0;
        eprintln!(
            "paced: {rate:.0} events/s for {} s...",
            args.webhook_paced_secs
        );
        let paced = pace(args, &channel, event_exchange, &live, &dead, rate).await?;
        anyhow::Ok((saturating, paced))
    };
    let phases = phases.await;
    let (_, hwm_mib) = memory_mib(pid).unwrap_or_default();
    sampling.store(false, Ordering::Relaxed);
    let peak_rss_mib = sampler.await.unwrap_or_default();
    let dead_receiver = DeadReceiver {
        requests: dead.requests.load(Ordering::Relaxed),
        peak_open: dead.peak_open.load(Ordering::Relaxed),
    };
    // Its attempts to the dead receiver end at once (the connections are
    // closed), so the dispatcher stops without waiting for the timeout.
    drop(dead);
    eprintln!("stopping the dispatcher (SIGTERM)...");
    drop(dispatcher);
    drop(live);
    let (saturating, paced) = phases?;
    Ok(WebhookBench {
        live_receivers: args.webhook_receivers,
        dead_receivers,
        dispatchers: 1,
        concurrency: CONCURRENCY,
        endpoint_concurrency: ENDPOINT_CONCURRENCY,
        attempt_timeout_secs: ATTEMPT_TIMEOUT_SECS,
        event_bytes: event(0).1.len(),
        saturating,
        paced,
        dead_receiver,
        memory: Memory {
            rss_at_ready_mib,
            peak_rss_mib: peak_rss_mib.max(rss_at_ready_mib),
            hwm_mib,
        },
    })
}

async fn saturate(
    args: &Args,
    env: &BenchEnv,
    channel: &lapin::Channel,
    event_exchange: &str,
    live: &[LiveReceiver],
) -> anyhow::Result<Saturating> {
    let events: Vec<_> = (0..args.webhook_events).map(event).collect();
    let ids = event_ids(&events);
    let expected = ids.len() * live.len();
    let states = live.iter().map(|receiver| receiver.state.clone()).collect();
    let intake = tokio::spawn(watch_intake(env.pool.clone(), ids.len(), states));
    let cpu_before = cpu::snapshot();
    let started = Instant::now();
    amqp::publish_requests(channel, event_exchange, EVENT_TYPE, &events, None).await?;
    let publish_seconds = started.elapsed().as_secs_f64();
    let receipts = wait_for_all(live, &ids, 0).await?;
    let cpu_after = cpu::snapshot();
    let (intake_done, live_at_intake_end) = intake.await??;
    let seconds = receipts
        .last
        .map_or(0.0, |last| last.duration_since(started).as_secs_f64());
    let intake_seconds = intake_done.duration_since(started).as_secs_f64();
    let cpu = Cpu::of(&cpu_before.per_thousand(&cpu_after, expected));
    let cores = cpu.cores(expected, seconds);
    Ok(Saturating {
        events: ids.len(),
        live_deliveries: expected,
        duplicates: receipts.duplicates,
        publish_seconds,
        intake_seconds,
        intake_events_per_second: ids.len() as f64 / intake_seconds,
        live_deliveries_at_intake_end: live_at_intake_end,
        seconds,
        deliveries_per_second: expected as f64 / seconds,
        events_per_second: ids.len() as f64 / seconds,
        cpu,
        cores,
    })
}

async fn pace(
    args: &Args,
    channel: &lapin::Channel,
    event_exchange: &str,
    live: &[LiveReceiver],
    dead: &DeadReceiverHandle,
    rate: f64,
) -> anyhow::Result<Paced> {
    let count = ((rate * args.webhook_paced_secs as f64).round() as usize).max(1);
    // Numbered after the saturating phase's, so no company repeats.
    let events: Vec<_> = (0..count).map(|n| event(args.webhook_events + n)).collect();
    let ids = event_ids(&events);
    let expected = ids.len() * live.len();
    let already: usize = live.iter().map(LiveReceiver::count).sum();
    let dead_before = dead.requests.load(Ordering::Relaxed);
    let cpu_before = cpu::snapshot();
    let started = Instant::now();
    let sent =
        amqp::publish_requests(channel, event_exchange, EVENT_TYPE, &events, Some(rate)).await?;
    let receipts = wait_for_all(live, &ids, already).await?;
    let cpu_after = cpu::snapshot();
    let dead_receiver_requests = dead.requests.load(Ordering::Relaxed) - dead_before;
    let sent: HashMap<Uuid, Instant> = sent
        .into_iter()
        .filter_map(|(id, at)| Some((id.parse().ok()?, at)))
        .collect();
    let latencies: Vec<Duration> = receipts
        .first
        .iter()
        .filter_map(|(id, at)| Some(at.duration_since(*sent.get(id)?)))
        .collect();
    let over_one_second = latencies
        .iter()
        .filter(|latency| **latency > Duration::from_secs(1))
        .count();
    let seconds = receipts
        .last
        .map_or(0.0, |last| last.duration_since(started).as_secs_f64());
    let cpu = Cpu::of(&cpu_before.per_thousand(&cpu_after, expected));
    let cores = cpu.cores(expected, seconds);
    Ok(Paced {
        offered_events_per_second: rate,
        events: ids.len(),
        live_deliveries: expected,
        duplicates: receipts.duplicates,
        seconds,
        latency: Latency::of(latencies),
        over_one_second,
        cpu,
        cores,
        dead_receiver_requests,
    })
}

/// A synthetic `connection.disconnected` event of the application, shaped
/// as the worker publishes it (`domain::event::payload`), with a fresh
/// `event_id`: (event id, body).
fn event(n: usize) -> (String, Vec<u8>) {
    let event_id = Uuid::new_v4().to_string();
    let body = serde_json::json!({
        "event_id": event_id,
        "event_type": EVENT_TYPE,
        "occurred_at": "2026-12-03T12:00:00.000000Z",
        "request_id": Uuid::new_v4().to_string(),
        "scope": "connection",
        "connection_id": Uuid::new_v4().to_string(),
        "client_id": APPLICATION,
        "company_id": format!("company-{n}"),
        "provider_id": "gusto",
        "revoked_token_ids": (0..5).map(|_| Uuid::new_v4().to_string()).collect::<Vec<_>>(),
    });
    (event_id, body.to_string().into_bytes())
}

fn event_ids(events: &[(String, Vec<u8>)]) -> HashSet<Uuid> {
    events
        .iter()
        .filter_map(|(id, _)| id.parse().ok())
        .collect()
}

/// `webhooks add` for the application, through the CLI as an operator does.
async fn add_endpoint(
    binary: &std::path::Path,
    env: &[(&'static str, String)],
    url: &str,
) -> anyhow::Result<Uuid> {
    let mut command = Command::new(binary);
    command
        .args([
            "webhooks",
            "add",
            "--client-id",
            APPLICATION,
            "--url",
            url,
            "--headers",
            "standard",
            "--json",
        ])
        .envs(env.iter().map(|(name, value)| (*name, value.as_str())));
    let output = tokio::task::spawn_blocking(move || command.output())
        .await?
        .context("running `webhooks add`")?;
    anyhow::ensure!(
        output.status.success(),
        "`webhooks add --url {url}` failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let added: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("the JSON of `webhooks add --json`")?;
    added["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .context("an endpoint id in the output of `webhooks add`")
}

async fn wait_until_ready(dispatcher: &WorkerProcess, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        if let Some((200, _)) = dispatcher.get("/readyz").await {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the dispatcher's /readyz did not answer 200 within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Wait until every live receiver got each of `ids` (beside the `already`
/// requests they had got before), as long as requests keep coming.
async fn wait_for_all(
    live: &[LiveReceiver],
    ids: &HashSet<Uuid>,
    already: usize,
) -> anyhow::Result<Receipts> {
    let expected = ids.len() * live.len();
    let mut total = already + expected;
    loop {
        wait_for_receipts(live, total).await?;
        let receipts = receipts_of(live, ids);
        if receipts.distinct >= expected {
            return Ok(receipts);
        }
        // Duplicates counted: as many more requests as are missing.
        total += expected - receipts.distinct;
    }
}

/// Wait until the live receivers together got `total` requests, as long as
/// requests keep coming.
async fn wait_for_receipts(live: &[LiveReceiver], total: usize) -> anyhow::Result<()> {
    let mut seen = 0;
    let mut progressed = Instant::now();
    loop {
        let now: usize = live.iter().map(LiveReceiver::count).sum();
        if now >= total {
            return Ok(());
        }
        if now > seen {
            seen = now;
            progressed = Instant::now();
        }
        anyhow::ensure!(
            progressed.elapsed() < STALL,
            "live deliveries stopped at {now} of {total}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Poll Postgres until the intake has recorded `events` events; then, when
/// that was, and how many live deliveries had arrived.
async fn watch_intake(
    pool: disconnect_worker::db::DbPool,
    events: usize,
    live: Vec<Arc<LiveState>>,
) -> anyhow::Result<(Instant, usize)> {
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Taken {
        #[diesel(sql_type = BigInt)]
        taken: i64,
    }
    let mut conn = pool.get().await?;
    let mut progressed = Instant::now();
    let mut seen = 0;
    loop {
        let taken: Taken = diesel::sql_query("SELECT count(*) AS taken FROM webhook_messages")
            .get_result(&mut conn)
            .await?;
        let taken = usize::try_from(taken.taken).unwrap_or_default();
        if taken >= events {
            let at = Instant::now();
            let received = live
                .iter()
                .map(|state| AtomicUsize::load(&state.count, Ordering::Relaxed));
            return Ok((at, received.sum()));
        }
        if taken > seen {
            seen = taken;
            progressed = Instant::now();
        }
        anyhow::ensure!(
            progressed.elapsed() < STALL,
            "the intake stopped at {taken} of {events} events"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What the live receivers got of `ids`.
struct Receipts {
    /// (receiver, event) pairs received.
    distinct: usize,
    duplicates: usize,
    /// The first receipt of each (receiver, event), by event.
    first: Vec<(Uuid, Instant)>,
    last: Option<Instant>,
}

fn receipts_of(live: &[LiveReceiver], ids: &HashSet<Uuid>) -> Receipts {
    let mut receipts = Receipts {
        distinct: 0,
        duplicates: 0,
        first: Vec::new(),
        last: None,
    };
    for receiver in live {
        let received = receiver.received();
        let mut seen = HashSet::with_capacity(ids.len());
        for (id, at) in received {
            let Some(id) = id.filter(|id| ids.contains(id)) else {
                continue;
            };
            if seen.insert(id) {
                receipts.first.push((id, at));
                receipts.last = Some(receipts.last.map_or(at, |last| last.max(at)));
            } else {
                receipts.duplicates += 1;
            }
        }
        receipts.distinct += seen.len();
    }
    receipts
}

/// A receiver on 127.0.0.1 that answers 200 at once and records, for each
/// request, its `webhook-id` (the event id) and when it was received.
struct LiveReceiver {
    url: String,
    state: Arc<LiveState>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct LiveState {
    received: Mutex<Vec<(Option<Uuid>, Instant)>>,
    count: AtomicUsize,
}

impl Drop for LiveReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(
    State(state): State<Arc<LiveState>>,
    headers: HeaderMap,
    _body: Bytes,
) -> StatusCode {
    let at = Instant::now();
    let id = headers
        .get("webhook-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("msg_"))
        .and_then(|value| value.parse().ok());
    if let Ok(mut received) = state.received.lock() {
        received.push((id, at));
    }
    state.count.fetch_add(1, Ordering::Relaxed);
    StatusCode::OK
}

impl LiveReceiver {
    async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(LiveState::default());
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            url: format!("http://127.0.0.1:{port}/hook"),
            state,
            task,
        })
    }

    fn count(&self) -> usize {
        self.state.count.load(Ordering::Relaxed)
    }

    fn received(&self) -> Vec<(Option<Uuid>, Instant)> {
        self.state
            .received
            .lock()
            .map(|received| received.clone())
            .unwrap_or_default()
    }
}

/// A receiver that reads each request and never answers: it holds the
/// connection until the dispatcher gives up on it. Counts the requests, and
/// the most it held at once.
struct DeadReceiverHandle {
    url: String,
    requests: Arc<AtomicUsize>,
    peak_open: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for DeadReceiverHandle {
    fn drop(&mut self) {
        // Its connections' tasks are in the accept loop's JoinSet: aborted
        // with it, closing every connection held.
        self.task.abort();
    }
}

impl DeadReceiverHandle {
    async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let requests = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let peak_open = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let requests = requests.clone();
            let peak_open = peak_open.clone();
            async move {
                let mut connections = JoinSet::new();
                while let Ok((mut stream, _)) = listener.accept().await {
                    while connections.try_join_next().is_some() {}
                    let requests = requests.clone();
                    let open = open.clone();
                    let peak_open = peak_open.clone();
                    connections.spawn(async move {
                        let mut head = Vec::new();
                        let mut buffer = [0u8; 4096];
                        let mut counted = false;
                        while let Ok(read) = stream.read(&mut buffer).await {
                            if read == 0 {
                                break;
                            }
                            if counted {
                                continue;
                            }
                            head.extend_from_slice(&buffer[..read]);
                            if head.windows(4).any(|window| window == b"\r\n\r\n") {
                                counted = true;
                                requests.fetch_add(1, Ordering::Relaxed);
                                let now = open.fetch_add(1, Ordering::Relaxed) + 1;
                                peak_open.fetch_max(now, Ordering::Relaxed);
                            }
                        }
                        if counted {
                            open.fetch_sub(1, Ordering::Relaxed);
                        }
                    });
                }
            }
        });
        Ok(Self {
            url: format!("http://127.0.0.1:{port}/hook"),
            requests,
            peak_open,
            task,
        })
    }
}

pub fn print(result: &WebhookBench) {
    println!(
        "\nWebhook dispatcher (`deliver`, one process): {} live receivers answering 200 and {} \
         that never answers, all endpoints of one application; events of {} bytes; \
         WEBHOOK_CONCURRENCY={} WEBHOOK_ENDPOINT_CONCURRENCY={} WEBHOOK_TIMEOUT_SECS={}\n",
        result.live_receivers,
        result.dead_receivers,
        result.event_bytes,
        result.concurrency,
        result.endpoint_concurrency,
        result.attempt_timeout_secs
    );
    let sat = &result.saturating;
    println!(
        "saturating: {} events published in {:.1} s; intake took them in in {:.1} s ({:.0} events/s; \
         {} live deliveries received by then)",
        sat.events,
        sat.publish_seconds,
        sat.intake_seconds,
        sat.intake_events_per_second,
        sat.live_deliveries_at_intake_end
    );
    println!(
        "saturating: {} live deliveries in {:.1} s: {:.0} deliveries/s per dispatcher, {:.0} events/s \
         (each to {} live endpoints + {} dead); {} duplicates",
        sat.live_deliveries,
        sat.seconds,
        sat.deliveries_per_second,
        sat.events_per_second,
        result.live_receivers,
        result.dead_receivers,
        sat.duplicates
    );
    let paced = &result.paced;
    println!(
        "\n| paced at {:.0} events/s | events | live deliveries | p50 ms | p99 ms | max ms | over 1 s | dead receiver requests |",
        paced.offered_events_per_second
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| publish to receipt | {} | {} | {:.1} | {:.1} | {:.1} | {} | {} |",
        paced.events,
        paced.live_deliveries,
        paced.latency.p50_ms,
        paced.latency.p99_ms,
        paced.latency.max_ms,
        paced.over_one_second,
        paced.dead_receiver_requests
    );
    println!("\nCPU per 1,000 live deliveries, ms (average cores busy)\n");
    println!(
        "| phase | dispatcher | Postgres | RabbitMQ | bench | machine | of which unattributed |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, cpu, cores) in [
        ("saturating", &sat.cpu, &sat.cores),
        ("paced", &paced.cpu, &paced.cores),
    ] {
        println!(
            "| {name} | {:.0} ({:.2}) | {:.0} ({:.2}) | {:.0} ({:.2}) | {:.0} ({:.2}) | {:.0} ({:.2}) | {:.0} ({:.2}) |",
            cpu.dispatcher_ms,
            cores.dispatcher,
            cpu.postgres_ms,
            cores.postgres,
            cpu.rabbitmq_ms,
            cores.rabbitmq,
            cpu.bench_ms,
            cores.bench,
            cpu.machine_ms,
            cores.machine,
            cpu.unattributed_ms,
            cores.unattributed
        );
    }
    println!(
        "\ndead receiver: {} requests over the run, at most {} open at once \
         (WEBHOOK_ENDPOINT_CONCURRENCY={})",
        result.dead_receiver.requests, result.dead_receiver.peak_open, result.endpoint_concurrency
    );
    println!(
        "dispatcher memory: {:.1} MiB resident when ready, peak {:.1} MiB (sampled every 100 ms), VmHWM {:.1} MiB",
        result.memory.rss_at_ready_mib, result.memory.peak_rss_mib, result.memory.hwm_mib
    );
}
