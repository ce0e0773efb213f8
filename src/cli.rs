//! The command line: `run`, `migrate`, `token issue|introspect`, `disconnect`,
//! `dead-letters list|requeue`, `outbox format|set-aside`, `deliver`,
//! `webhooks add|list|disable|enable|rotate-secret|remove|attempts|resend`.

use clap::{Args, Parser, Subcommand};

use uuid::Uuid;

use crate::config::webhooks::{DeliverArgs, WebhookAddressArgs, WebhookKeyArgs};
use crate::config::{BrokerArgs, DatabaseArgs, LogFormat, WorkerArgs, DEFAULT_CLIENT_ID};
use crate::webhooks::HeaderFormat;

#[derive(Debug, Parser)]
#[command(name = "disconnect-worker", version, about)]
pub struct Cli {
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_name = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Consume disconnect requests until SIGTERM or SIGINT.
    Run {
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(flatten)]
        broker: BrokerArgs,
        #[command(flatten)]
        worker: WorkerArgs,
    },
    /// Create the database if missing, apply pending migrations, and exit.
    Migrate {
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Issue or inspect access tokens, as the platform's connect flow does.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Publish a disconnect request (a token, its connection, a connection by
    /// id, a company, a whole application, entities), as an upstream
    /// application does.
    Disconnect(DisconnectArgs),
    /// Read the dead-letter queue, or send dead letters back to the request
    /// exchange.
    DeadLetters {
        #[command(subcommand)]
        command: DeadLetterCommand,
    },
    /// The webhook dispatcher: sends every outcome event of an
    /// application's connections to its endpoints, signed, until SIGTERM.
    Deliver {
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(flatten)]
        broker: BrokerArgs,
        #[command(flatten)]
        deliver: DeliverArgs,
    },
    /// An application's webhook endpoints, and their deliveries.
    Webhooks {
        #[command(subcommand)]
        command: WebhookCommand,
    },
    /// The outbox's format (which releases can publish its events) and the
    /// events set aside because they cannot be published.
    Outbox {
        #[command(subcommand)]
        command: OutboxCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// Add an endpoint; prints its id and its signing secret, once.
    Add(WebhookAddArgs),
    /// List endpoints (never their secrets).
    List {
        /// This application's only.
        #[arg(long)]
        client_id: Option<String>,
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Stop sending to it; its deliveries wait until it is enabled.
    Disable(WebhookIdArgs),
    /// Send to it again, its waiting deliveries first.
    Enable(WebhookIdArgs),
    /// A new secret, printed once; the old one also signs for 24 hours.
    RotateSecret(WebhookIdArgs),
    /// Remove it, with its deliveries and their attempts.
    Remove(WebhookIdArgs),
    /// Deliveries and their attempts, newest first: status code, duration,
    /// error, next attempt.
    Attempts(WebhookAttemptsArgs),
    /// Send an event again (its finished deliveries), with the same id.
    Resend(WebhookResendArgs),
}

#[derive(Debug, Args)]
pub struct WebhookAddArgs {
    /// The application whose connections' events it receives.
    #[arg(long)]
    pub client_id: String,
    /// Where to POST: https (http only with WEBHOOK_ALLOW_HTTP=true).
    #[arg(long)]
    pub url: String,
    /// An event type it takes; repeatable. None: every outcome event.
    #[arg(long = "event-type", value_name = "TYPE")]
    pub event_types: Vec<String>,
    /// The signature headers' names: Standard Webhooks' or Finch's.
    #[arg(long, value_enum, default_value_t = HeaderFormat::Standard)]
    pub headers: HeaderFormat,
    /// Print `{"id": ..., "secret": ...}`.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub key: WebhookKeyArgs,
    #[command(flatten)]
    pub addresses: WebhookAddressArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, Args)]
pub struct WebhookIdArgs {
    /// The endpoint's id.
    pub id: Uuid,
    #[command(flatten)]
    pub key: WebhookKeyArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, Args)]
pub struct WebhookAttemptsArgs {
    /// This endpoint's only.
    #[arg(long)]
    pub endpoint: Option<Uuid>,
    /// This event's only.
    #[arg(long)]
    pub event_id: Option<Uuid>,
    /// Failed deliveries only (no attempt left, or 410).
    #[arg(long)]
    pub failed: bool,
    /// At most this many lines.
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, Args)]
pub struct WebhookResendArgs {
    /// The event (its `event_id`).
    #[arg(long)]
    pub event_id: Uuid,
    /// To this endpoint only.
    #[arg(long)]
    pub endpoint: Option<Uuid>,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, Subcommand)]
pub enum OutboxCommand {
    /// Show or set the outbox format every replica writes in.
    Format {
        #[command(subcommand)]
        command: FormatCommand,
    },
    /// Events set aside because they cannot be published: their rows were
    /// changed or deleted by hand or by another release.
    SetAside {
        #[command(subcommand)]
        command: SetAsideCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum FormatCommand {
    /// Print the format, and how many events wait in each outbox table.
    Show {
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Set the format. `whole` before a rolling upgrade from, or a
    /// rollback to, 0.3.x; `by-reference` once no such replica can run.
    /// Setting `whole` waits until every event kept by reference is
    /// published, so a release that cannot publish them finds none.
    Set(FormatSetArgs),
}

#[derive(Debug, Args)]
pub struct FormatSetArgs {
    #[arg(value_enum)]
    pub format: FormatChoice,
    /// Return once the format is stored, without waiting for the events
    /// kept by reference to be published.
    #[arg(long)]
    pub no_wait: bool,
    /// Seconds to wait for them.
    #[arg(long, default_value_t = 300)]
    pub wait_secs: u64,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// An outbox format, as the command line names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatChoice {
    /// Every event with its bytes: every release publishes them.
    Whole,
    /// Every connection.disconnected by reference: this
    /// release and later ones only.
    #[value(alias = "by_reference")]
    ByReference,
}

#[derive(Debug, Subcommand)]
pub enum SetAsideCommand {
    /// List them: event, request and connection ids, when, and the
    /// problem; never a token (none is stored).
    List {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Put them back in the outbox, for the relay to rebuild and publish
    /// (after their rows were restored, or where a release that builds them
    /// runs); one that still cannot be published is set aside again.
    Retry(SetAsideChoice),
    /// Delete them, once handled by other means: they are never published.
    Discard(SetAsideChoice),
}

#[derive(Debug, Args)]
pub struct SetAsideChoice {
    /// This one; repeatable.
    #[arg(
        long = "event-id",
        value_name = "EVENT_ID",
        required_unless_present = "all"
    )]
    pub event_ids: Vec<String>,
    /// Every one.
    #[arg(long, conflicts_with = "event_ids")]
    pub all: bool,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, Subcommand)]
pub enum DeadLetterCommand {
    /// List dead letters: code, reason, request id, when first dead-lettered
    /// and how often; never a token or a body. Nothing is removed.
    List(DeadLetterListArgs),
    /// Publish dead letters again to the request exchange, with confirms;
    /// each leaves the dead-letter queue only once the broker has confirmed
    /// its copy (a crash half-way loses nothing and at worst sends a
    /// request twice, which the worker's idempotency absorbs).
    Requeue(DeadLetterRequeueArgs),
}

/// Which dead letters a command takes.
#[derive(Debug, Args)]
pub struct DeadLetterFilter {
    /// Only those with this code: the worker's rejection code
    /// (invalid_field, ...) or RabbitMQ's reason (delivery_limit, expired);
    /// repeatable.
    #[arg(long = "code", value_name = "CODE")]
    pub codes: Vec<String>,
    /// Only the one with this request id; repeatable.
    #[arg(long = "request-id", value_name = "REQUEST_ID")]
    pub request_ids: Vec<String>,
    /// Read at most this many dead letters, from the head of the queue.
    #[arg(long, default_value_t = 10_000)]
    pub limit: usize,
}

#[derive(Debug, Args)]
pub struct DeadLetterListArgs {
    #[command(flatten)]
    pub filter: DeadLetterFilter,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub broker: BrokerArgs,
}

#[derive(Debug, Args)]
pub struct DeadLetterRequeueArgs {
    #[command(flatten)]
    pub filter: DeadLetterFilter,
    /// Every dead letter (without --code or --request-id, one of the three
    /// is required).
    #[arg(long)]
    pub all: bool,
    /// Print what would be requeued; publish and remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub broker: BrokerArgs,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue a new token for an employer at a provider; prints only the token.
    Issue(IssueArgs),
    /// Print what a token belongs to and whether it is active, as JSON.
    Introspect {
        /// The token to look up.
        token: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

#[derive(Debug, Args)]
pub struct IssueArgs {
    /// The employer.
    #[arg(long)]
    pub company_id: String,
    /// The payroll or HR provider (gusto, justworks, ...).
    #[arg(long)]
    pub provider_id: String,
    /// The customer application holding the token.
    #[arg(long, default_value = DEFAULT_CLIENT_ID)]
    pub client_id: String,
    /// The user whose credentials authenticated (kept as a label).
    #[arg(long)]
    pub user: Option<String>,
    /// Product permissions granted, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub products: Vec<String>,
    /// The provider's id of an entity (legal entity, EIN, division) this
    /// authentication covers; repeat it for each. A new one joins the
    /// connection; one disconnected alone is active again.
    #[arg(long = "entity", value_name = "PROVIDER_ENTITY_ID")]
    pub entities: Vec<String>,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, Args)]
pub struct DisconnectArgs {
    /// The token whose connection to disconnect (or, with --scope token,
    /// to revoke alone).
    pub token: Option<String>,
    /// A connection to disconnect by id (needs --client-id).
    #[arg(long)]
    pub connection_id: Option<String>,
    /// Every active connection of this company in the application (needs
    /// --client-id).
    #[arg(long)]
    pub company_id: Option<String>,
    /// The application; the only one whose rows the request touches.
    #[arg(long)]
    pub client_id: Option<String>,
    /// An entity of the connection (of TOKEN, or of --connection-id) to
    /// disconnect alone; repeat it for each. The connection, its tokens and
    /// its other entities stay.
    #[arg(long = "entity-id", value_name = "ENTITY_ID")]
    pub entity_ids: Vec<String>,
    /// token (the token alone), connection (the default with a token or a
    /// connection id), company, client (every active connection of the
    /// application), entity (implied by --entity-id).
    #[arg(long)]
    pub scope: Option<String>,
    /// user_request, employer_offboarded, customer_offboarded,
    /// credential_compromised, fraud or other: carried to the audit record
    /// and every event.
    #[arg(long)]
    pub reason_code: Option<String>,
    /// Print the connections the request would disconnect and the number of
    /// tokens it would revoke, from DATABASE_URL; change and publish nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Why, for the audit trail.
    #[arg(long)]
    pub reason: Option<String>,
    /// Who asked, for the audit trail.
    #[arg(long)]
    pub requested_by: Option<String>,
    /// Wait for the outcome event and print it.
    #[arg(long)]
    pub wait: bool,
    /// Seconds to wait for the outcome event with --wait.
    #[arg(long, default_value_t = 30)]
    pub wait_secs: u64,
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
}
