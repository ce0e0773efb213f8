use std::process::ExitCode;

use clap::Parser;
use disconnect_worker::cli::Cli;
use disconnect_worker::commands::{self, ConfigError};
use disconnect_worker::telemetry;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The process-wide TLS provider, for clients that take the default (the
    // OTLP exporter's); every other client names ring itself.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let telemetry = match telemetry::init(cli.log_format) {
        Ok(telemetry) => telemetry,
        Err(message) => {
            eprintln!("error: invalid configuration: {message}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // The command (and so the consume loop) runs on this thread, beside the
    // runtime's workers. Spawning it onto them saved switches and CPU when
    // saturated, but deliveries then waited behind batch work: p50 at half
    // rate rose (docs/performance.md, "The consume loop on the main thread").
    let result = runtime.block_on(commands::dispatch(cli.command));
    drop(runtime);
    // After the runtime: the exporter's HTTP client blocks.
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.is::<ConfigError>() => {
            eprintln!("error: {error}");
            ExitCode::from(2)
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
