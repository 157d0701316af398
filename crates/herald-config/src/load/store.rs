//! `[store]`: where the durable record lives — the embedded store in a directory
//! (relative paths are relative to the main configuration file), or PostgreSQL
//! (`backend = "postgres"`), shared by several herald nodes.

use toml::Spanned;

use super::{In, Loader, at};
use crate::model::{PostgresConfig, StoreConfig};
use crate::raw::RawStore;

/// Connections per node unless `pool_size` says otherwise.
const DEFAULT_POOL_SIZE: u32 = 16;
const DEFAULT_SCHEMA: &str = "herald";

impl Loader<'_> {
    pub(super) fn store(&mut self, raw: Option<In<RawStore>>) -> StoreConfig {
        let Some(In { file, value }) = raw else {
            return StoreConfig {
                path: self.base_dir.join("data"),
                min_free_bytes: None,
                postgres: None,
            };
        };
        let postgres = match value.backend.as_ref().map(|b| (b.get_ref().as_str(), b)) {
            None | Some(("sqlite", _)) => {
                for (key, span) in [
                    ("url", value.url.as_ref().map(Spanned::span)),
                    ("pool_size", value.pool_size.as_ref().map(Spanned::span)),
                    ("schema", value.schema.as_ref().map(Spanned::span)),
                ] {
                    if let Some(span) = span {
                        self.error(
                            format!("`{key}` applies only to backend = \"postgres\" (this [store] is the embedded one)"),
                            at(file, span),
                        );
                    }
                }
                None
            }
            Some(("postgres", backend)) => self.postgres(&value, backend, file),
            Some((other, backend)) => {
                self.error(
                    format!("unknown store backend `{other}`; expected \"sqlite\" (embedded, the default) or \"postgres\""),
                    at(file, backend.span()),
                );
                None
            }
        };
        StoreConfig {
            path: self
                .base_dir
                .join(value.path.as_ref().map_or("data", |p| p.get_ref().as_str())),
            // Any value is meaningful (0 turns the check off); TOML integers cannot
            // exceed u64, so there is nothing to bound.
            min_free_bytes: value.min_free_bytes.map(|m| m.into_inner()),
            postgres,
        }
    }

    fn postgres(
        &mut self,
        value: &RawStore,
        backend: &Spanned<String>,
        file: usize,
    ) -> Option<PostgresConfig> {
        for (key, span) in [
            ("path", value.path.as_ref().map(Spanned::span)),
            (
                "min_free_bytes",
                value.min_free_bytes.as_ref().map(Spanned::span),
            ),
        ] {
            if let Some(span) = span {
                self.error(
                    format!(
                        "`{key}` applies only to the embedded store, not to backend = \"postgres\""
                    ),
                    at(file, span),
                );
            }
        }
        let Some(url) = &value.url else {
            self.error(
                "backend = \"postgres\" needs `url` (e.g. url = \"env:HERALD_DATABASE_URL\")",
                at(file, backend.span()),
            );
            return None;
        };
        let url = self.secret(url, file, "PostgreSQL connection URL")?;
        if !looks_like_postgres(url.expose()) {
            // Never quote it: it may hold a password.
            self.error(
                "`url` is not a PostgreSQL connection string: expected postgres://user@host:port/database \
                 (or key=value pairs such as \"host=… dbname=…\")",
                at(file, value.url.as_ref().map_or(backend.span(), Spanned::span)),
            );
            return None;
        }
        let pool_size = match &value.pool_size {
            Some(n) if !(1..=1000).contains(n.get_ref()) => {
                self.error("pool_size must be between 1 and 1000", at(file, n.span()));
                return None;
            }
            Some(n) => *n.get_ref(),
            None => DEFAULT_POOL_SIZE,
        };
        let schema = match &value.schema {
            Some(schema) => {
                if let Err(why) = check_schema(schema.get_ref()) {
                    self.error(format!("invalid schema: {why}"), at(file, schema.span()));
                    return None;
                }
                schema.get_ref().clone()
            }
            None => DEFAULT_SCHEMA.to_string(),
        };
        Some(PostgresConfig {
            url,
            pool_size: pool_size as usize,
            schema,
        })
    }
}

/// A URL of the postgres scheme, or libpq's key=value form.
fn looks_like_postgres(url: &str) -> bool {
    let url = url.trim();
    url.starts_with("postgres://") || url.starts_with("postgresql://") || url.contains('=')
}

/// The rule herald-store's `valid_schema_name` applies (herald-config does not depend on
/// the store): a plain lower-case identifier that needs no quoting in SQL.
fn check_schema(schema: &str) -> Result<(), String> {
    let plain = schema
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !plain {
        return Err(format!(
            "`{schema}` is not a plain schema name: use lower-case letters, digits and `_`, not starting with a digit"
        ));
    }
    if schema.len() > 63 || schema.starts_with("pg_") {
        return Err(format!(
            "`{schema}` is too long (63 bytes at most) or reserved (`pg_…`)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::load::testing::{BASE, Files, SUB, check};

    #[test]
    fn the_store_path_is_relative_to_the_configuration_file() {
        let files = Files::new(&[(
            "herald.toml",
            &format!("{BASE}{SUB}[store]\npath = \"state/db\"\n"),
        )]);
        let config = files.load().config.expect("the configuration is valid");
        assert_eq!(config.store.path, files.dir.join("state/db"));
        let files = Files::new(&[("herald.toml", &format!("{BASE}{SUB}"))]);
        let config = files.load().config.expect("the configuration is valid");
        assert_eq!(config.store.path, files.dir.join("data"));
        assert_eq!(config.store.min_free_bytes, None);
    }

    #[test]
    fn the_free_space_minimum_is_read() {
        let files = Files::new(&[(
            "herald.toml",
            &format!("{BASE}{SUB}[store]\nmin_free_bytes = 1048576\n"),
        )]);
        let config = files.load().config.expect("the configuration is valid");
        assert_eq!(config.store.min_free_bytes, Some(1_048_576));
        check(
            &format!("{SUB}[store]\nmin_free_bytes = -1\n"),
            "herald.toml:22:18: error: invalid value: integer `-1`, expected u64",
        );
    }

    #[test]
    fn unknown_key_in_the_store_section() {
        check(
            &format!("{SUB}[store]\ndir = \"x\"\n"),
            "herald.toml:22:1: error: unknown field `dir`, expected one of `backend`, `path`, `min_free_bytes`, `url`, `pool_size`, `schema`",
        );
    }

    #[test]
    fn the_postgres_backend_reads_its_url_from_the_environment() {
        let files = Files::new(&[(
            "herald.toml",
            &format!(
                "{BASE}{SUB}[store]\nbackend = \"postgres\"\nurl = \"env:HERALD_DATABASE_URL\"\n"
            ),
        )]);
        let config = files.load().config.expect("the configuration is valid");
        let pg = config.store.postgres.expect("the postgres backend");
        assert_eq!(pg.url.expose(), "postgres://herald:pw@db:5432/herald");
        assert_eq!((pg.pool_size, pg.schema.as_str()), (16, "herald"));
        let files = Files::new(&[(
            "herald.toml",
            &format!(
                "{BASE}{SUB}[store]\nbackend = \"postgres\"\nurl = \"host=db dbname=herald\"\npool_size = 4\nschema = \"herald_eu\"\n"
            ),
        )]);
        let pg = files.load().config.unwrap().store.postgres.unwrap();
        assert_eq!((pg.pool_size, pg.schema.as_str()), (4, "herald_eu"));
        let files = Files::new(&[("herald.toml", &format!("{BASE}{SUB}"))]);
        assert!(files.load().config.unwrap().store.postgres.is_none());
    }

    #[test]
    fn postgres_settings_are_checked_with_their_position() {
        let cases = [
            (
                "[store]\nbackend = \"postgres\"\n",
                "herald.toml:22:11: error: backend = \"postgres\" needs `url` (e.g. url = \"env:HERALD_DATABASE_URL\")",
            ),
            (
                "[store]\nbackend = \"mysql\"\n",
                "herald.toml:22:11: error: unknown store backend `mysql`; expected \"sqlite\" (embedded, the default) or \"postgres\"",
            ),
            (
                "[store]\nbackend = \"postgres\"\nurl = \"env:NO_SUCH_URL\"\n",
                "herald.toml:23:7: error: environment variable `NO_SUCH_URL` (the PostgreSQL connection URL) is not set",
            ),
            (
                "[store]\nbackend = \"postgres\"\nurl = \"mysql://root:hunter2@db/x\"\n",
                "herald.toml:23:7: error: `url` is not a PostgreSQL connection string: expected postgres://user@host:port/database (or key=value pairs such as \"host=… dbname=…\")",
            ),
            (
                "[store]\nbackend = \"postgres\"\nurl = \"postgres://db/x\"\npool_size = 0\n",
                "herald.toml:24:13: error: pool_size must be between 1 and 1000",
            ),
            (
                "[store]\nbackend = \"postgres\"\nurl = \"postgres://db/x\"\nschema = \"Herald-EU\"\n",
                "herald.toml:24:10: error: invalid schema: `Herald-EU` is not a plain schema name: use lower-case letters, digits and `_`, not starting with a digit",
            ),
            (
                "[store]\nbackend = \"postgres\"\nurl = \"postgres://db/x\"\npath = \"data\"\n",
                "herald.toml:24:8: error: `path` applies only to the embedded store, not to backend = \"postgres\"",
            ),
            (
                "[store]\nurl = \"postgres://db/x\"\n",
                "herald.toml:22:7: error: `url` applies only to backend = \"postgres\" (this [store] is the embedded one)",
            ),
        ];
        for (section, expect) in cases {
            check(&format!("{SUB}{section}"), expect);
        }
    }

    #[test]
    fn a_literal_database_password_never_shows_in_a_diagnostic() {
        let files = Files::new(&[(
            "herald.toml",
            &format!(
                "{BASE}{SUB}[store]\nbackend = \"postgres\"\nurl = \"postgres://herald:hunter2@db/x\"\npool_size = \"many\"\n"
            ),
        )]);
        let fancy = files.load().diagnostics.render(false);
        assert!(fancy.contains("pool_size"), "{fancy}");
        assert!(!fancy.contains("hunter2"), "{fancy}");
    }
}
