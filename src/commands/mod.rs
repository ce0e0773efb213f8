//! One function per subcommand; `main.rs` only parses and dispatches.

pub mod dead_letters;
pub mod deliver;
pub mod disconnect;
pub mod migrate;
pub mod outbox;
pub mod run;
pub mod token;
pub mod webhooks;

use anyhow::Context;
use diesel::QueryResult;
use diesel_async::AsyncPgConnection;

use crate::cli::{
    Command, DeadLetterCommand, FormatCommand, OutboxCommand, SetAsideCommand, TokenCommand,
    WebhookCommand,
};
use crate::db::DatabaseSettings;

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
        Command::DeadLetters {
            command: DeadLetterCommand::List(args),
        } => dead_letters::list(&args).await,
        Command::DeadLetters {
            command: DeadLetterCommand::Requeue(args),
        } => dead_letters::requeue(&args).await,
        Command::Deliver {
            database,
            broker,
            deliver,
        } => deliver::deliver(&database, &broker, &deliver).await,
        Command::Webhooks { command } => match command {
            WebhookCommand::Add(args) => webhooks::add(&args).await,
            WebhookCommand::List {
                client_id,
                json,
                database,
            } => webhooks::list(client_id.as_deref(), json, &database).await,
            WebhookCommand::Disable(args) => webhooks::disable(&args).await,
            WebhookCommand::Enable(args) => webhooks::enable(&args).await,
            WebhookCommand::RotateSecret(args) => webhooks::rotate_secret(&args).await,
            WebhookCommand::Remove(args) => webhooks::remove(&args).await,
            WebhookCommand::Attempts(args) => webhooks::attempts(&args).await,
            WebhookCommand::Resend(args) => webhooks::resend(&args).await,
        },
        Command::Outbox { command } => match command {
            OutboxCommand::Format {
                command: FormatCommand::Show { database },
            } => outbox::show_format(&database).await,
            OutboxCommand::Format {
                command: FormatCommand::Set(args),
            } => outbox::set_format(&args).await,
            OutboxCommand::SetAside {
                command: SetAsideCommand::List { json, database },
            } => outbox::list_set_aside(json, &database).await,
            OutboxCommand::SetAside {
                command: SetAsideCommand::Retry(args),
            } => outbox::retry_set_aside(&args).await,
            OutboxCommand::SetAside {
                command: SetAsideCommand::Discard(args),
            } => outbox::discard_set_aside(&args).await,
        },
    }
}

/// Run `work` on a connection of its own, every wait bounded as the
/// worker's are: the connect, the server's statement timeout, and the
/// transaction deadline (`doing` names the work in the error).
pub(crate) async fn with_database<T>(
    settings: &DatabaseSettings,
    doing: &'static str,
    work: impl AsyncFnOnce(&mut AsyncPgConnection) -> QueryResult<T>,
) -> anyhow::Result<T> {
    let mut conn = settings.url.establish().await?;
    let deadline = settings.deadlines.transaction;
    match crate::observability::metrics::within("database_transaction", deadline, work(&mut conn))
        .await
    {
        Ok(result) => result.context(doing),
        Err(_) => anyhow::bail!("{doing}: the database did not answer within {deadline:?}"),
    }
}
