//! The results: one table on stdout, the same as JSON with --json.

use serde::Serialize;

use super::amqp::Measured;
use super::broker_baseline::BrokerBaseline;
use super::db_baseline::{DbBaseline, LargeConnection};
use super::end_to_end::EndToEnd;
use super::population::AtRest;
use super::Args;

#[derive(Debug, Serialize)]
pub struct Results {
    pub connections: usize,
    pub tokens_per_connection: usize,
    pub padding_token_rows: usize,
    /// The population's size and bytes at rest, with `--population-tokens`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub population: Option<AtRest>,
    pub prefetch: u16,
    pub batch_size: u16,
    pub batch_linger_ms: u64,
    pub pool_size: u16,
    pub db_concurrency: usize,
    pub database_baseline: DbBaseline,
    pub broker_baseline: BrokerBaseline,
    pub broker_baseline_half_rate: BrokerBaseline,
    pub worker_saturating: EndToEnd,
    pub worker_half_rate: EndToEnd,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_saturating_traced: Option<EndToEnd>,
    pub worker_over_database_baseline: f64,
    pub worker_over_broker_baseline: f64,
    pub machine_cpu: CpuRatios,
    pub large_connection: LargeConnection,
}

/// The runs without the worker, to compare it with.
pub struct Baselines {
    pub database: DbBaseline,
    pub broker: BrokerBaseline,
    /// The broker baseline paced at the worker's half rate.
    pub broker_half_rate: BrokerBaseline,
}

/// Machine CPU per request of one run over another's: what the worker
/// adds to the broker's own cost, and what a paced stream costs over a
/// saturating one, with the worker and without.
#[derive(Debug, Serialize)]
pub struct CpuRatios {
    pub worker_over_broker_baseline: f64,
    pub worker_half_rate_over_saturating: f64,
    pub broker_half_rate_over_saturating: f64,
}

impl Results {
    pub fn new(
        args: &Args,
        population: Option<AtRest>,
        baselines: Baselines,
        worker_saturating: EndToEnd,
        worker_half_rate: EndToEnd,
        worker_saturating_traced: Option<EndToEnd>,
        large_connection: LargeConnection,
    ) -> Self {
        let Baselines {
            database: database_baseline,
            broker: broker_baseline,
            broker_half_rate: broker_baseline_half_rate,
        } = baselines;
        let machine = |measured: &Measured| measured.cpu.machine_ms;
        let machine_cpu = CpuRatios {
            worker_over_broker_baseline: machine(&worker_saturating.measured)
                / machine(&broker_baseline.measured),
            worker_half_rate_over_saturating: machine(&worker_half_rate.measured)
                / machine(&worker_saturating.measured),
            broker_half_rate_over_saturating: machine(&broker_baseline_half_rate.measured)
                / machine(&broker_baseline.measured),
        };
        Self {
            connections: args.connections,
            tokens_per_connection: args.tokens_per_connection,
            padding_token_rows: args.padding_token_rows,
            population,
            prefetch: args.prefetch,
            batch_size: args.batch_size,
            batch_linger_ms: args.batch_linger_ms,
            pool_size: args.pool_size,
            db_concurrency: args.db_concurrency,
            worker_over_database_baseline: worker_saturating.measured.requests_per_second
                / database_baseline.requests_per_second,
            worker_over_broker_baseline: worker_saturating.measured.requests_per_second
                / broker_baseline.measured.requests_per_second,
            machine_cpu,
            database_baseline,
            broker_baseline,
            broker_baseline_half_rate,
            worker_saturating,
            worker_half_rate,
            worker_saturating_traced,
            large_connection,
        }
    }
}

pub fn print(args: &Args, results: &Results) {
    println!(
        "\n{} connections x {} tokens ({} padding token rows); worker PREFETCH={} BATCH_SIZE={} BATCH_LINGER_MS={} DATABASE_POOL_SIZE={}\n",
        args.connections, args.tokens_per_connection, args.padding_token_rows, args.prefetch, args.batch_size, args.batch_linger_ms, args.pool_size
    );
    println!("| run | requests/s | p50 ms | p99 ms | max ms | peak RSS MiB |");
    println!("|---|---:|---:|---:|---:|---:|");
    println!(
        "| database baseline ({} concurrent transactions) | {:.0} | | | | |",
        results.db_concurrency, results.database_baseline.requests_per_second
    );
    for (name, broker) in [
        (
            "broker baseline (pass-through consumer)",
            &results.broker_baseline,
        ),
        (
            "broker baseline, half rate",
            &results.broker_baseline_half_rate,
        ),
    ] {
        let name = match broker.offered_rate {
            Some(rate) => format!("{name} ({rate:.0}/s offered)"),
            None => name.to_string(),
        };
        let broker = &broker.measured;
        println!(
            "| {name} | {:.0} | {:.1} | {:.1} | {:.1} | |",
            broker.requests_per_second,
            broker.latency.p50_ms,
            broker.latency.p99_ms,
            broker.latency.max_ms
        );
    }
    let traced = results.worker_saturating_traced.iter();
    for (name, run) in [
        ("worker, saturating", &results.worker_saturating),
        ("worker, half rate", &results.worker_half_rate),
    ]
    .into_iter()
    .chain(traced.map(|run| ("worker, saturating, every span exported", run)))
    {
        let name = match run.offered_rate {
            Some(rate) => format!("{name} ({rate:.0}/s offered)"),
            None => name.to_string(),
        };
        println!(
            "| {name} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} (steady {:.1} to {:.1}) |",
            run.measured.requests_per_second,
            run.measured.latency.p50_ms,
            run.measured.latency.p99_ms,
            run.measured.latency.max_ms,
            run.peak_memory_mib,
            run.steady_memory_mib.0,
            run.steady_memory_mib.1
        );
    }
    print_cpu(results);
    print_writes(results);
    print_buffers(results);
    println!(
        "\nworker / database baseline = {:.2}; worker / broker baseline = {:.2}",
        results.worker_over_database_baseline, results.worker_over_broker_baseline
    );
    println!(
        "one connection with {} tokens revoked in {:.0} ms (one statement)",
        results.large_connection.tokens_revoked, results.large_connection.milliseconds
    );
    if let Some(traced) = &results.worker_saturating_traced {
        println!(
            "traced run: {} spans exported",
            traced.spans_exported.unwrap_or_default()
        );
    }
}

/// Where the CPU went in each run: milliseconds per 1,000 requests. On a
/// machine shared by every process, this is what bounds throughput.
fn print_cpu(results: &Results) {
    println!("\nCPU per 1,000 requests, ms (machine: every process and the kernel)\n");
    println!("| run | postgres | rabbitmq | worker | bench | machine |");
    println!("|---|---:|---:|---:|---:|---:|");
    let traced = results.worker_saturating_traced.iter();
    for (name, cpu) in [
        ("database baseline", &results.database_baseline.cpu),
        ("broker baseline", &results.broker_baseline.measured.cpu),
        (
            "broker baseline, half rate",
            &results.broker_baseline_half_rate.measured.cpu,
        ),
        (
            "worker, saturating",
            &results.worker_saturating.measured.cpu,
        ),
        ("worker, half rate", &results.worker_half_rate.measured.cpu),
    ]
    .into_iter()
    .chain(traced.map(|run| {
        (
            "worker, saturating, traced (receiver in bench)",
            &run.measured.cpu,
        )
    })) {
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
            cpu.postgres_ms, cpu.rabbitmq_ms, cpu.worker_ms, cpu.bench_ms, cpu.machine_ms
        );
    }
    let ratios = &results.machine_cpu;
    println!(
        "\nmachine CPU per request: worker saturating / broker baseline = {:.2}; \
         half rate / saturating: worker {:.2}, broker baseline {:.2}",
        ratios.worker_over_broker_baseline,
        ratios.worker_half_rate_over_saturating,
        ratios.broker_half_rate_over_saturating
    );
}

/// What each run of the worker wrote to Postgres, per request: the WAL
/// (records and full-page images apart) and the rows of each table.
fn print_writes(results: &Results) {
    println!("\nPostgres writes per request\n");
    println!("| run | WAL record bytes | WAL full-page image bytes | WAL records | rows inserted / updated (HOT) / deleted |");
    println!("|---|---:|---:|---:|---|");
    let traced = results.worker_saturating_traced.iter();
    for (name, run) in [
        ("worker, saturating", &results.worker_saturating),
        ("worker, half rate", &results.worker_half_rate),
    ]
    .into_iter()
    .chain(traced.map(|run| ("worker, saturating, traced", run)))
    {
        let writes = &run.writes;
        let rows: Vec<String> = writes
            .rows
            .iter()
            .filter(|(_, rows)| rows.inserted + rows.updated + rows.deleted > 0.0)
            .map(|(table, rows)| {
                format!(
                    "{table} {:.2} / {:.2} ({:.2}) / {:.2}",
                    rows.inserted, rows.updated, rows.hot_updated, rows.deleted
                )
            })
            .collect();
        println!(
            "| {name} | {:.0} | {:.0} | {:.1} | {} |",
            writes.wal_record_bytes,
            writes.wal_fpi_bytes,
            writes.wal_records,
            rows.join("; ")
        );
    }
    let run = &results.worker_saturating.writes;
    println!("\nWAL by record type, worker saturating, per request\n");
    println!("| record type | records | bytes |");
    println!("|---|---:|---:|");
    for (kind, count, bytes) in run.wal_by_kind.iter().take(12) {
        println!("| {kind} | {count:.2} | {bytes:.0} |");
    }
}

/// Where the tokens' and connections' pages were found, and the population
/// at rest.
fn print_buffers(results: &Results) {
    if let Some(at_rest) = &results.population {
        let mib = |bytes: i64| bytes as f64 / (1024.0 * 1024.0);
        println!(
            "\npopulation: {} tokens in {} connections; shared_buffers {:.0} MiB; at rest: tokens \
             heap {:.0} MiB + indexes {:.0} MiB, connections heap {:.0} MiB + indexes {:.0} MiB: \
             {:.0} bytes a token",
            at_rest.tokens,
            at_rest.connections,
            mib(at_rest.shared_buffers_bytes),
            mib(at_rest.tokens_heap_bytes),
            mib(at_rest.tokens_index_bytes),
            mib(at_rest.connections_heap_bytes),
            mib(at_rest.connections_index_bytes),
            at_rest.bytes_per_token
        );
        if let Some(blocks) = at_rest.prewarmed_blocks {
            println!(
                "prewarmed: {blocks} blocks ({:.0} MiB) loaded into shared_buffers before the runs",
                mib(blocks * 8192)
            );
        }
    }
    println!("\nBlocks of access_tokens and connections (heap and indexes), per request\n");
    println!("| run | heap hit ratio | index hit ratio | blocks read from outside shared_buffers | blocks hit |");
    println!("|---|---:|---:|---:|---:|");
    for (name, run) in [
        ("worker, saturating", &results.worker_saturating),
        ("worker, half rate", &results.worker_half_rate),
    ] {
        let buffers = &run.buffers;
        println!(
            "| {name} | {:.4} | {:.4} | {:.2} | {:.1} |",
            buffers.heap_hit_ratio,
            buffers.index_hit_ratio,
            buffers.reads_per_request,
            buffers.hits_per_request
        );
    }
}
