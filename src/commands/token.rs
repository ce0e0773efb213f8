//! `disconnect-worker token issue|introspect`.

use super::{with_database, ConfigError};
use crate::cli::IssueArgs;
use crate::config::DatabaseArgs;
use crate::domain::scope::check_label;
use crate::domain::AccessToken;
use crate::service::{introspect_token, issue_token, TokenGrant};

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
    for entity in &args.entities {
        check_label(entity).map_err(|what| ConfigError(format!("--entity {what}")))?;
    }
    let settings = args.database.settings().map_err(ConfigError)?;
    let grant = TokenGrant {
        client_id: args.client_id.clone(),
        company_id: args.company_id.clone(),
        provider_id: args.provider_id.clone(),
        user: args.user.clone(),
        products: args.products.clone(),
        entities: args.entities.clone(),
    };
    let issued = with_database(&settings, "issuing the token", async |conn| {
        issue_token(conn, &grant).await
    })
    .await?;
    tracing::info!(token.id = %issued.token_id, connection.id = %issued.connection_id, "token issued");
    println!("{}", issued.token.expose());
    Ok(())
}

pub async fn introspect(token: String, database: &DatabaseArgs) -> anyhow::Result<()> {
    let settings = database.settings().map_err(ConfigError)?;
    let introspection = match AccessToken::parse(token) {
        Ok(token) => {
            with_database(&settings, "looking up the token", async |conn| {
                introspect_token(conn, &token).await
            })
            .await?
        }
        // A string that can never be a token is simply not an active one.
        Err(_) => crate::service::Introspection {
            active: false,
            details: None,
        },
    };
    println!("{}", serde_json::to_string_pretty(&introspection)?);
    Ok(())
}
