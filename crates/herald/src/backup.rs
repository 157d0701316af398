//! `herald backup` and `herald restore`: copy the embedded store out, and put a copy back.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use herald_store::{CopyReport, SqliteStore};

/// The store directory the configuration at `config_path` names.
fn store_dir(config_path: &Path) -> anyhow::Result<PathBuf> {
    let outcome = herald_config::load(config_path);
    match outcome.config {
        Some(config) => match config.store.postgres {
            // Online backup is the embedded store's; PostgreSQL has its own tools.
            Some(pg) => anyhow::bail!(
                "the store is PostgreSQL (schema `{schema}`), which herald does not copy itself: \
                 back it up with pg_dump, e.g. `pg_dump --schema={schema} --format=custom \
                 --file=herald.dump \"$HERALD_DATABASE_URL\"`, and restore with pg_restore \
                 (see docs/operations.md, \"Backups\")",
                schema = pg.schema
            ),
            None => Ok(config.store.path),
        },
        None => {
            eprint!("{}", outcome.diagnostics.render(false));
            anyhow::bail!(
                "{} is not valid; cannot tell where the store is",
                config_path.display()
            )
        }
    }
}

/// Copies the store to the new file `dest`, consistently, while a herald may be serving.
pub fn backup(config_path: &Path, dest: &Path) -> anyhow::Result<()> {
    let dir = store_dir(config_path)?;
    let report = SqliteStore::backup(&dir, dest)
        .with_context(|| format!("backing up the store in {}", dir.display()))?;
    println!("backup written: {}", summary(&report));
    Ok(())
}

/// Replaces the store with the backup `from`; refused while a herald holds the store.
pub fn restore(config_path: &Path, from: &Path) -> anyhow::Result<()> {
    let dir = store_dir(config_path)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let report = SqliteStore::restore(from, &dir, now).with_context(|| {
        format!(
            "restoring {} into the store in {}",
            from.display(),
            dir.display()
        )
    })?;
    println!("store restored: {}", summary(&report));
    if let Some(previous) = &report.previous {
        println!("the replaced database is kept as {}", previous.display());
    }
    Ok(())
}

fn summary(report: &CopyReport) -> String {
    format!(
        "{} ({} events, {} deliveries, {} bytes, schema version {})",
        report.path.display(),
        report.events,
        report.deliveries,
        report.bytes,
        report.schema_version
    )
}
