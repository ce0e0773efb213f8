//! `disconnect-worker outbox format show|set` and `outbox set-aside
//! list|retry|discard`: the operator's side of `outbox::format` and
//! `outbox::store::set_aside`.

use std::time::Duration;

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::{with_database, ConfigError};
use crate::cli::{FormatChoice, FormatSetArgs, SetAsideChoice};
use crate::config::DatabaseArgs;
use crate::db::schema::outbox_disconnections;
use crate::db::DatabaseSettings;
use crate::domain::EventId;
use crate::outbox::format::{self, REFRESH};
use crate::outbox::store::set_aside::{self, Chosen};
use crate::outbox::store::{self, Backlog};
use crate::outbox::OutboxFormat;

pub async fn show_format(database: &DatabaseArgs) -> anyhow::Result<()> {
    let settings = database.settings().map_err(ConfigError)?;
    let (stored, by_reference, backlog) =
        with_database(&settings, "reading the outbox", async |conn| {
            Ok((
                format::stored(conn).await?,
                references_waiting(conn).await?,
                store::backlog(conn).await?,
            ))
        })
        .await?;
    let Backlog {
        pending, set_aside, ..
    } = backlog;
    println!("outbox format: {stored}");
    println!(
        "events waiting: {pending} ({by_reference} kept by reference); set aside: {set_aside}"
    );
    Ok(())
}

pub async fn set_format(args: &FormatSetArgs) -> anyhow::Result<()> {
    let settings = args.database.settings().map_err(ConfigError)?;
    let format = match args.format {
        FormatChoice::Whole => OutboxFormat::Whole,
        FormatChoice::ByReference => OutboxFormat::ByReference,
    };
    let before = with_database(&settings, "setting the outbox format", async |conn| {
        format::store(conn, format).await
    })
    .await?;
    tracing::info!(outbox.format = format.as_str(), before = %before, "outbox format set");
    println!("outbox format: {before} -> {}", format.as_str());
    if format == OutboxFormat::ByReference || args.no_wait {
        return Ok(());
    }
    wait_until_no_reference(&settings, Duration::from_secs(args.wait_secs)).await
}

/// After `whole` is set: every replica follows within [`REFRESH`], and a
/// batch that read the old format before commits within the transaction
/// deadline; then the relays publish what is left by reference. Returns
/// once none is left, so that a release that cannot publish them (0.3.x)
/// may run; fails if some are still there after `wait`.
async fn wait_until_no_reference(
    settings: &DatabaseSettings,
    wait: Duration,
) -> anyhow::Result<()> {
    let started = tokio::time::Instant::now();
    let followed = REFRESH + settings.deadlines.transaction;
    eprintln!(
        "waiting {followed:?} for every replica to follow, then for the events kept by \
         reference to be published (at most {wait:?})"
    );
    tokio::time::sleep(followed.min(wait)).await;
    let mut last_report = None;
    loop {
        let waiting = with_database(
            settings,
            "counting the events kept by reference",
            async |conn| references_waiting(conn).await,
        )
        .await?;
        if waiting == 0 {
            println!("no event is kept by reference: releases before 0.4 may run");
            return Ok(());
        }
        if started.elapsed() >= wait {
            anyhow::bail!(
                "{waiting} events kept by reference are still unpublished after {wait:?}: a \
                 replica of this release (or a later one) with a broker session publishes them; \
                 a release before 0.4 never does"
            );
        }
        if last_report.is_none_or(|at: tokio::time::Instant| at.elapsed() >= REFRESH) {
            eprintln!("{waiting} events kept by reference still to publish");
            last_report = Some(tokio::time::Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn references_waiting(conn: &mut diesel_async::AsyncPgConnection) -> QueryResult<i64> {
    outbox_disconnections::table.count().get_result(conn).await
}

pub async fn list_set_aside(json: bool, database: &DatabaseArgs) -> anyhow::Result<()> {
    let settings = database.settings().map_err(ConfigError)?;
    let rows = with_database(&settings, "listing the events set aside", async |conn| {
        set_aside::list(conn).await
    })
    .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!("event_id\trequest_id\tconnection_id\tset_aside_at\tproblem");
    for row in &rows {
        println!(
            "{}\t{}\t{}\t{}\t{}",
            row.event_id,
            row.request_id,
            row.connection_id,
            row.set_aside_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            row.problem
        );
    }
    eprintln!("{} events set aside", rows.len());
    Ok(())
}

pub async fn retry_set_aside(args: &SetAsideChoice) -> anyhow::Result<()> {
    let settings = args.database.settings().map_err(ConfigError)?;
    let ids = event_ids(args)?;
    let chosen = chosen(args, &ids);
    let moved = with_database(
        &settings,
        "putting events back in the outbox",
        async |conn| set_aside::retry(conn, chosen).await,
    )
    .await?;
    println!("{moved} events back in the outbox; the relay publishes them, or sets aside again those it still cannot rebuild");
    Ok(())
}

pub async fn discard_set_aside(args: &SetAsideChoice) -> anyhow::Result<()> {
    let settings = args.database.settings().map_err(ConfigError)?;
    let ids = event_ids(args)?;
    let chosen = chosen(args, &ids);
    let deleted = with_database(&settings, "discarding events set aside", async |conn| {
        set_aside::discard(conn, chosen).await
    })
    .await?;
    tracing::warn!(
        events = deleted,
        "discarded events set aside; they are never published"
    );
    println!("{deleted} events discarded");
    Ok(())
}

fn event_ids(args: &SetAsideChoice) -> anyhow::Result<Vec<EventId>> {
    args.event_ids
        .iter()
        .map(|id| {
            Uuid::parse_str(id)
                .map(EventId::from_uuid)
                .map_err(|_| ConfigError(format!("--event-id `{id}` is not a UUID")).into())
        })
        .collect()
}

fn chosen<'a>(args: &SetAsideChoice, ids: &'a [EventId]) -> Chosen<'a> {
    if args.all {
        Chosen::All
    } else {
        Chosen::Ids(ids)
    }
}
