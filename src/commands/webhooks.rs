//! `disconnect-worker webhooks ...`: an application's endpoints, and the
//! deliveries operators look into and send again.

use chrono::Utc;
use uuid::Uuid;

use super::{with_database, ConfigError};
use crate::cli::{WebhookAddArgs, WebhookAttemptsArgs, WebhookIdArgs, WebhookResendArgs};
use crate::config::DatabaseArgs;
use crate::db::webhooks::attempts::{self, AttemptFilter};
use crate::db::webhooks::{deliveries, endpoints};
use crate::webhooks::endpoint::parse_event_types;
use crate::webhooks::secrets::SigningSecret;
use crate::webhooks::EndpointUrl;

/// How long the previous secret signs beside the new one after a rotation.
const ROTATION_OVERLAP: chrono::Duration = chrono::Duration::hours(24);

/// Prints the endpoint's id and its secret, once: the secret cannot be
/// shown again (it is kept sealed).
pub async fn add(args: &WebhookAddArgs) -> anyhow::Result<()> {
    if args.client_id.is_empty() || args.client_id.len() > 128 {
        return Err(ConfigError("--client-id must be 1 to 128 characters".into()).into());
    }
    let key = args.key.key().map_err(ConfigError)?;
    let policy = args.addresses.policy().map_err(ConfigError)?;
    let url = EndpointUrl::parse(&args.url, args.addresses.webhook_allow_http, &policy)
        .map_err(ConfigError)?;
    let event_types = parse_event_types(&args.event_types).map_err(ConfigError)?;
    let settings = args.database.settings().map_err(ConfigError)?;
    let id = Uuid::now_v7();
    let secret = SigningSecret::generate();
    let sealed = key.seal(&secret, id);
    let endpoint = endpoints::NewEndpoint {
        id,
        client_id: &args.client_id,
        url: url.as_str(),
        event_types: &event_types,
        header_format: args.headers.as_str(),
        secret_sealed: &sealed,
    };
    with_database(&settings, "adding the endpoint", async |conn| {
        endpoints::insert(conn, &endpoint).await
    })
    .await?;
    tracing::info!(webhook.endpoint_id = %id, client.id = %args.client_id, url = %url.origin(), "webhook endpoint added");
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "id": id, "secret": secret.shown_for(args.headers) })
        );
    } else {
        println!("id: {id}");
        println!("secret: {}", secret.shown_for(args.headers));
    }
    Ok(())
}

pub async fn list(
    client_id: Option<&str>,
    json: bool,
    database: &DatabaseArgs,
) -> anyhow::Result<()> {
    let settings = database.settings().map_err(ConfigError)?;
    let rows = with_database(&settings, "listing endpoints", async |conn| {
        endpoints::list(conn, client_id).await
    })
    .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!("ID\tCLIENT\tFORMAT\tSTATE\tEVENT TYPES\tURL");
    for row in rows {
        let state = match (&row.disabled_at, &row.disabled_reason, &row.failing_since) {
            (Some(_), reason, _) => format!("disabled ({})", reason.as_deref().unwrap_or("?")),
            (None, _, Some(since)) => format!("failing since {}", since.to_rfc3339()),
            (None, _, None) => "enabled".into(),
        };
        let types = if row.event_types.is_empty() {
            "all".to_string()
        } else {
            row.event_types.join(",")
        };
        let url = EndpointUrl::stored(&row.url).map_or_else(|| row.url.clone(), |url| url.origin());
        println!(
            "{}\t{}\t{}\t{state}\t{types}\t{url}",
            row.id, row.client_id, row.header_format
        );
    }
    Ok(())
}

pub async fn disable(args: &WebhookIdArgs) -> anyhow::Result<()> {
    let settings = args.database.settings().map_err(ConfigError)?;
    let id = args.id;
    let found = with_database(&settings, "disabling the endpoint", async |conn| {
        use diesel_async::AsyncConnection;
        conn.transaction::<_, diesel::result::Error, _>(async |conn| {
            let found = endpoints::exists(conn, id).await?;
            if found {
                deliveries::disable(conn, id, "operator").await?;
            }
            Ok(found)
        })
        .await
    })
    .await?;
    report(
        found,
        id,
        "disabled; its deliveries wait until it is enabled",
    )
}

pub async fn enable(args: &WebhookIdArgs) -> anyhow::Result<()> {
    let settings = args.database.settings().map_err(ConfigError)?;
    let id = args.id;
    let found = with_database(&settings, "enabling the endpoint", async |conn| {
        endpoints::enable(conn, id).await
    })
    .await?;
    report(found, id, "enabled; its pending deliveries are due now")
}

/// A new secret, printed once; the old one signs beside it for 24 hours,
/// so receivers can switch without a failed delivery.
pub async fn rotate_secret(args: &WebhookIdArgs) -> anyhow::Result<()> {
    let key = args.key.key().map_err(ConfigError)?;
    let settings = args.database.settings().map_err(ConfigError)?;
    let id = args.id;
    let Some((sealed, format)) = with_database(&settings, "reading the endpoint", async |conn| {
        endpoints::sealed_secret(conn, id).await
    })
    .await?
    else {
        return report(false, id, "");
    };
    // The old secret must open: sealing it again under this key proves the
    // key is the one the dispatcher uses.
    let previous = key.open(&sealed, id)?;
    let format = crate::webhooks::HeaderFormat::parse(&format)
        .ok_or_else(|| anyhow::anyhow!("endpoint {id} has an unknown header format `{format}`"))?;
    let secret = SigningSecret::generate();
    let new_sealed = key.seal(&secret, id);
    let previous_sealed = key.seal(&previous, id);
    let until = Utc::now() + ROTATION_OVERLAP;
    with_database(&settings, "rotating the secret", async |conn| {
        endpoints::rotate_secret(conn, id, &new_sealed, &previous_sealed, until).await
    })
    .await?;
    tracing::info!(webhook.endpoint_id = %id, "webhook secret rotated");
    println!("secret: {}", secret.shown_for(format));
    println!(
        "the previous secret also signs until {}",
        until.to_rfc3339()
    );
    Ok(())
}

pub async fn remove(args: &WebhookIdArgs) -> anyhow::Result<()> {
    let settings = args.database.settings().map_err(ConfigError)?;
    let id = args.id;
    let found = with_database(&settings, "removing the endpoint", async |conn| {
        endpoints::remove(conn, id).await
    })
    .await?;
    report(found, id, "removed, with its deliveries and their attempts")
}

fn report(found: bool, id: Uuid, done: &str) -> anyhow::Result<()> {
    if !found {
        anyhow::bail!("no webhook endpoint {id}");
    }
    println!("endpoint {id} {done}");
    Ok(())
}

pub async fn attempts(args: &WebhookAttemptsArgs) -> anyhow::Result<()> {
    let settings = args.database.settings().map_err(ConfigError)?;
    let filter = AttemptFilter {
        endpoint_id: args.endpoint,
        event_id: args.event_id,
        failed: args.failed,
        limit: i64::from(args.limit),
    };
    let lines = with_database(&settings, "listing attempts", async |conn| {
        attempts::list(conn, &filter).await
    })
    .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&lines)?);
        return Ok(());
    }
    println!("EVENT\tENDPOINT\tDELIVERY\tATTEMPT\tAT\tSTATUS\tMS\tERROR\tNEXT");
    for line in lines {
        let dash = || "-".to_string();
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            line.event_id,
            line.endpoint_id,
            line.delivery_status,
            line.attempt,
            line.attempted_at.map_or_else(dash, |at| at.to_rfc3339()),
            line.status_code.map_or_else(dash, |code| code.to_string()),
            line.duration_ms.map_or_else(dash, |ms| ms.to_string()),
            line.error.unwrap_or_else(dash),
            line.next_attempt_at.map_or_else(dash, |at| at.to_rfc3339()),
        );
    }
    Ok(())
}

pub async fn resend(args: &WebhookResendArgs) -> anyhow::Result<()> {
    let settings = args.database.settings().map_err(ConfigError)?;
    let (event_id, endpoint) = (args.event_id, args.endpoint);
    let count = with_database(&settings, "resending", async |conn| {
        deliveries::resend(conn, event_id, endpoint).await
    })
    .await?;
    if count == 0 {
        anyhow::bail!("no finished delivery of event {event_id} to resend (a pending one is still being attempted)");
    }
    println!("{count} deliveries of event {event_id} will be attempted again, with the same id");
    Ok(())
}
