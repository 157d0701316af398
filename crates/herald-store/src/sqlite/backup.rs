//! Online backup and restore of the embedded store's database file.
//!
//! The backup reads the database file directly through a read-only connection instead of
//! through [`super::SqliteStore`]: a running herald holds the directory's lock, and a read
//! transaction in WAL mode sees one consistent snapshot while the writer goes on
//! committing. The copy is made in one step of SQLite's backup API, i.e. inside one read
//! transaction, so a busy writer can never make it start over.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use super::schema;
use crate::error::StoreError;

/// How long the backup waits between tries when the source is momentarily locked (a
/// checkpoint truncating the WAL).
const BUSY_PAUSE: Duration = Duration::from_millis(20);
/// Tries before a locked source is reported as an error (about 10 s).
const BUSY_TRIES: u32 = 500;

/// What a backup or a restore copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyReport {
    /// The file written.
    pub path: PathBuf,
    /// Its schema version (`PRAGMA user_version`).
    pub schema_version: i64,
    /// Events in the copy.
    pub events: u64,
    /// Deliveries in the copy.
    pub deliveries: u64,
    /// The copy's size in bytes.
    pub bytes: u64,
    /// Restore only: where the replaced database was kept (`None` if there was none).
    pub previous: Option<PathBuf>,
}

fn file_error(path: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_owned();
    move |source| StoreError::File {
        path,
        action,
        source: Arc::new(source),
    }
}

/// Copies the database `db` to a new file `dest` (which must not exist), consistently,
/// while another process may be writing to `db`. The copy is a self-contained file
/// (rollback journal mode, no `-wal` beside it), synced to disk before it gets its name.
pub(crate) fn backup(db: &Path, dest: &Path) -> Result<CopyReport, StoreError> {
    if !db.exists() {
        return Err(StoreError::NotHerald {
            path: db.to_owned(),
            reason: "there is no database file here (has herald run with this [store] path?)"
                .into(),
        });
    }
    if dest.exists() {
        return Err(StoreError::File {
            path: dest.to_owned(),
            action: "write the backup to",
            source: Arc::new(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "the file exists; choose a new name (a backup never overwrites)",
            )),
        });
    }
    let source = open_read_only(db)?;
    check_herald(&source, db)?;
    let partial = sibling(dest, ".partial");
    // A leftover of an interrupted backup is ours to replace.
    let _ = std::fs::remove_file(&partial);
    let result = copy_into(&source, &partial).and_then(|()| {
        let report = finish_copy(&partial, dest)?;
        std::fs::rename(&partial, dest).map_err(file_error(dest, "name the backup"))?;
        sync_parent(dest)?;
        Ok(report)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

/// Replaces the database `db` with the backup `from`. The caller holds the directory's
/// lock. The backup is checked to be a herald database this herald can open; it is copied
/// beside `db`, synced, and renamed over `db` in one step, so a crash leaves either the
/// old store or the new one. The old database is kept next to it, hard-linked under a
/// `.before-restore-SECONDS` name, so a restore loses nothing.
pub(crate) fn restore(from: &Path, db: &Path, now_secs: u64) -> Result<CopyReport, StoreError> {
    let source = open_read_only(from)?;
    check_herald(&source, from)?;
    let staged = sibling(db, ".restoring");
    let _ = std::fs::remove_file(&staged);
    let result = copy_into(&source, &staged).and_then(|()| finish_copy(&staged, &staged));
    drop(source);
    let mut report = match result {
        Ok(report) => report,
        Err(e) => {
            let _ = std::fs::remove_file(&staged);
            return Err(e);
        }
    };
    let mut previous = None;
    if db.exists() {
        // Fold the old WAL into the old file first: a `-wal` left beside the new database
        // would be replayed into it.
        let old = Connection::open(db)?;
        old.busy_timeout(Duration::from_secs(5))?;
        old.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        drop(old);
        let kept = sibling(db, &format!(".before-restore-{now_secs}"));
        std::fs::hard_link(db, &kept)
            .map_err(file_error(&kept, "keep the replaced database as"))?;
        previous = Some(kept);
    }
    for suffix in ["-wal", "-shm"] {
        let side = sibling(db, suffix);
        match std::fs::remove_file(&side) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(file_error(&side, "remove")(e)),
        }
    }
    std::fs::rename(&staged, db)
        .map_err(file_error(db, "put the restored database in place at"))?;
    sync_parent(db)?;
    report.path = db.to_owned();
    report.previous = previous;
    Ok(report)
}

fn open_read_only(path: &Path) -> Result<Connection, StoreError> {
    if !path.is_file() {
        return Err(StoreError::NotHerald {
            path: path.to_owned(),
            reason: "no such file".into(),
        });
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

/// Refuses anything but a herald database of a schema version this herald knows.
fn check_herald(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let not_herald = |reason: String| StoreError::NotHerald {
        path: path.to_owned(),
        reason,
    };
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(|e| not_herald(format!("not a readable SQLite database ({e})")))?;
    let known = schema::schema_version();
    if version < 1 {
        return Err(not_herald(
            "not a herald database (no schema version)".into(),
        ));
    }
    if version > known {
        return Err(not_herald(format!(
            "schema version {version} is newer than the {known} this herald knows; use a newer herald"
        )));
    }
    let tables: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table'
           AND name IN ('events', 'deliveries', 'attempts', 'channel_states')",
        [],
        |row| row.get(0),
    )?;
    if tables != 4 {
        return Err(not_herald(
            "not a herald database (its tables are missing)".into(),
        ));
    }
    Ok(())
}

fn copy_into(source: &Connection, dest: &Path) -> Result<(), StoreError> {
    let mut target = Connection::open(dest)?;
    {
        let backup = Backup::new(source, &mut target)?;
        let mut busy = 0;
        // -1: every page in one step, i.e. one read transaction on the source.
        loop {
            match backup.step(-1)? {
                StepResult::Done => break,
                StepResult::More => {}
                StepResult::Busy | StepResult::Locked => {
                    busy += 1;
                    if busy > BUSY_TRIES {
                        return Err(StoreError::Internal(
                            "the database stayed locked during the backup",
                        ));
                    }
                    std::thread::sleep(BUSY_PAUSE);
                }
                _ => return Err(StoreError::Internal("unexpected backup step result")),
            }
        }
    }
    // A self-contained file: no WAL to carry around with it.
    target.query_row("PRAGMA journal_mode = DELETE", [], |_| Ok(()))?;
    Ok(())
}

/// Verifies the copy at `path` and syncs it; the report names `name`.
fn finish_copy(path: &Path, name: &Path) -> Result<CopyReport, StoreError> {
    let conn = Connection::open(path)?;
    let check: String = conn.query_row("PRAGMA quick_check", [], |row| row.get(0))?;
    if check != "ok" {
        return Err(StoreError::NotHerald {
            path: path.to_owned(),
            reason: format!("the copy fails SQLite's integrity check: {check}"),
        });
    }
    let count = |table: &str| -> Result<u64, StoreError> {
        let n: i64 = conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    };
    let schema_version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    let (events, deliveries) = (count("events")?, count("deliveries")?);
    drop(conn);
    let file = std::fs::File::open(path).map_err(file_error(path, "open"))?;
    file.sync_all().map_err(file_error(path, "sync"))?;
    let bytes = file
        .metadata()
        .map_err(file_error(path, "read"))
        .map(|m| m.len())?;
    Ok(CopyReport {
        path: name.to_owned(),
        schema_version,
        events,
        deliveries,
        bytes,
        previous: None,
    })
}

/// `path` with `suffix` appended to its file name.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Makes a rename in `path`'s directory durable.
fn sync_parent(path: &Path) -> Result<(), StoreError> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::File::open(parent)
        .and_then(|dir| dir.sync_all())
        .map_err(file_error(parent, "sync the directory"))
}

#[cfg(test)]
mod tests;
