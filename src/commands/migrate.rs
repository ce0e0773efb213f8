//! `disconnect-worker migrate`: for a Kubernetes Job or a deploy step.

use super::ConfigError;
use crate::config::DatabaseArgs;
use crate::db;

pub async fn migrate(database: &DatabaseArgs) -> anyhow::Result<()> {
    let settings = database.settings().map_err(ConfigError)?;
    db::setup::create_database_if_missing(&settings.url).await?;
    let applied = db::migrate(&settings.url).await?;
    tracing::info!(database = %settings.url, migrations.applied = applied.len(), "migrations applied");
    Ok(())
}
