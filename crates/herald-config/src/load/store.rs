//! `[store]`: where the durable record lives (relative paths are relative to the main
//! configuration file).

use super::{In, Loader};
use crate::model::StoreConfig;
use crate::raw::RawStore;

impl Loader<'_> {
    pub(super) fn store(&self, raw: Option<In<RawStore>>) -> StoreConfig {
        let (path, min_free_bytes) = match raw {
            Some(In { value, .. }) => (value.path, value.min_free_bytes),
            None => (None, None),
        };
        StoreConfig {
            path: self.base_dir.join(path.unwrap_or_else(|| "data".into())),
            // Any value is meaningful (0 turns the check off); TOML integers cannot
            // exceed u64, so there is nothing to bound.
            min_free_bytes: min_free_bytes.map(|m| m.into_inner()),
        }
    }
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
            "herald.toml:22:1: error: unknown field `dir`, expected `path` or `min_free_bytes`",
        );
    }
}
