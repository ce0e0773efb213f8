//! `disconnect-worker token issue|introspect`.

use anyhow::Context;
use diesel_async::AsyncPgConnection;

use super::ConfigError;
use crate::cli::IssueArgs;
use crate::config::DatabaseArgs;
use crate::domain::AccessToken;
use crate::service::{introspect_token, issue_token, TokenGrant};

async fn open(database: &DatabaseArgs) -> anyhow::Result<AsyncPgConnection> {
    let settings = database.settings().map_err(ConfigError)?;
    Ok(settings.url.establish().await?)
}

/// Prints only the token, so scripts can capture it.
pub async fn issue(args: &IssueArgs) -> anyhow::Result<()> {
    for (flag, value) in [
        ("--company-id", &args.company_id),
        ("--provider-id", &args.provider_id),
        ("--client-id", &args.client_id),
    ] {
        if value.is_empty() || value.len() > 128 {
            return Err(ConfigError(format!("{flag} must be 1 to 128 characters")).into());
        }
    }
    let mut conn = open(&args.database).await?;
    let grant = TokenGrant {
        client_id: args.client_id.clone(),
        company_id: args.company_id.clone(),
        provider_id: args.provider_id.clone(),
        user: args.user.clone(),
        products: args.products.clone(),
    };
    let issued = issue_token(&mut conn, &grant)
        .await
        .context("issuing the token")?;
    tracing::info!(token.id = %issued.token_id, connection.id = %issued.connection_id, "token issued");
    println!("{}", issued.token.expose());
    Ok(())
}

pub async fn introspect(token: String, database: &DatabaseArgs) -> anyhow::Result<()> {
    let mut conn = open(database).await?;
    let introspection = match AccessToken::parse(token) {
        Ok(token) => introspect_token(&mut conn, &token)
            .await
            .context("looking up the token")?,
        // A string that can never be a token is simply not an active one.
        Err(_) => crate::service::Introspection {
            active: false,
            details: None,
        },
    };
    println!("{}", serde_json::to_string_pretty(&introspection)?);
    Ok(())
}
