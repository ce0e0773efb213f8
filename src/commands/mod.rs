//! One function per subcommand; `main.rs` only parses and dispatches.

pub mod disconnect;
pub mod migrate;
pub mod run;
pub mod token;

use crate::cli::{Command, TokenCommand};

/// A setting that failed validation: reported without a backtrace, exit 2.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

pub async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run {
            database,
            broker,
            worker,
        } => run::run(&database, &broker, &worker).await,
        Command::Migrate { database } => migrate::migrate(&database).await,
        Command::Token {
            command: TokenCommand::Issue(args),
        } => token::issue(&args).await,
        Command::Token {
            command: TokenCommand::Introspect { token, database },
        } => token::introspect(token, &database).await,
        Command::Disconnect(args) => disconnect::disconnect(&args).await,
    }
}
