//! `[store]`: where the durable record lives (relative paths are relative to the main
//! configuration file).

use super::{In, Loader};
use crate::model::StoreConfig;
use crate::raw::RawStore;

impl Loader<'_> {
    pub(super) fn store(&self, raw: Option<In<RawStore>>) -> StoreConfig {
        StoreConfig {
            path: self.base_dir.join(
                raw.and_then(|s| s.value.path)
                    .unwrap_or_else(|| "data".into()),
            ),
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
    }

    #[test]
    fn unknown_key_in_the_store_section() {
        check(
            &format!("{SUB}[store]\ndir = \"x\"\n"),
            "herald.toml:22:1: error: unknown field `dir`, expected `path`",
        );
    }
}
