//! `herald migrate`: brings the PostgreSQL store's schema to this herald's version (what
//! `herald serve` also does at start), so an upgrade can migrate before any node restarts.

use std::path::Path;

use anyhow::Context as _;
use herald_store::PostgresStore;

pub async fn run(config_path: &Path) -> anyhow::Result<()> {
    let outcome = herald_config::load(config_path);
    let Some(config) = outcome.config else {
        eprint!("{}", outcome.diagnostics.render(false));
        anyhow::bail!(
            "{} is not valid; nothing was migrated",
            config_path.display()
        );
    };
    let Some(pg) = &config.store.postgres else {
        anyhow::bail!(
            "[store] is the embedded store, which migrates itself when herald opens it; \
             `herald migrate` is for backend = \"postgres\""
        );
    };
    let options = crate::serve::postgres_options(pg);
    let report = PostgresStore::migrate_only(&options)
        .await
        .context("migrating the PostgreSQL store")?;
    if report.from == report.to {
        println!(
            "schema `{}` is at version {}: nothing to do",
            options.schema, report.to
        );
    } else {
        println!(
            "schema `{}` migrated from version {} to {}",
            options.schema, report.from, report.to
        );
    }
    Ok(())
}
