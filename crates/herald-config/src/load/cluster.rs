//! `[cluster]`: what several herald nodes share besides the store — the live bus that
//! carries every node's live stream to the others (Redis Pub/Sub).

use super::{In, Loader, at};
use crate::model::{ClusterConfig, DEFAULT_CHANNEL_PREFIX};
use crate::raw::RawCluster;

impl Loader<'_> {
    pub(super) fn cluster(&mut self, raw: Option<In<RawCluster>>) -> Option<ClusterConfig> {
        let Some(In { file, value }) = raw else {
            return Some(ClusterConfig {
                live_bus: None,
                channel_prefix: DEFAULT_CHANNEL_PREFIX.to_string(),
                node_id: None,
            });
        };
        let live_bus = match &value.live_bus {
            Some(url) => self
                .redis_url(url, file, "live bus url ([cluster] live_bus)")
                .map(Some),
            None => Some(None),
        };
        let word = |this: &mut Self, v: &toml::Spanned<String>, what: &str| {
            let s = v.get_ref();
            if s.is_empty() || s.len() > 64 || s.chars().any(|c| !c.is_ascii_graphic()) {
                this.error(
                    format!("{what} must be 1–64 printable ASCII characters without spaces"),
                    at(file, v.span()),
                );
                None
            } else {
                Some(s.clone())
            }
        };
        let channel_prefix = match &value.channel_prefix {
            Some(p) => word(self, p, "channel_prefix"),
            None => Some(DEFAULT_CHANNEL_PREFIX.to_string()),
        };
        let node_id = match &value.node_id {
            Some(n) => word(self, n, "node_id").map(Some),
            None => Some(None),
        };
        Some(ClusterConfig {
            live_bus: live_bus?,
            channel_prefix: channel_prefix?,
            node_id: node_id?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{BASE, Files, SUB, check};

    #[test]
    fn problems_are_located() {
        let cases: &[(&str, &str)] = &[
            (
                "[cluster]\nlive_bus = \"postgres://db\"\n",
                "herald.toml:22:12: error: the live bus url ([cluster] live_bus) must start with redis:// or unix://, not `postgres://`",
            ),
            (
                "[cluster]\nlive_bus = \"redis://h\"\nchannel_prefix = \"\"\n",
                "herald.toml:23:18: error: channel_prefix must be 1–64 printable ASCII characters without spaces",
            ),
            (
                "[cluster]\nnode_id = \"node a\"\n",
                "herald.toml:22:11: error: node_id must be 1–64 printable ASCII characters without spaces",
            ),
            (
                "[cluster]\nbus = \"redis://h\"\n",
                "herald.toml:22:1: error: unknown field `bus`, expected one of `live_bus`, `channel_prefix`, `node_id`",
            ),
        ];
        for (tail, want) in cases {
            check(&format!("{SUB}{tail}"), want);
        }
    }

    #[test]
    fn values_and_defaults() {
        let files = Files::new(&[("herald.toml", &format!("{BASE}{SUB}"))]);
        let config = files.load().config.expect("valid");
        assert!(config.cluster.live_bus.is_none());
        assert_eq!(config.cluster.channel_prefix, "herald");
        let files = Files::new(&[(
            "herald.toml",
            &format!(
                "{BASE}{SUB}[cluster]\nlive_bus = \"redis://127.0.0.1:6379/0\"\nchannel_prefix = \"prod\"\nnode_id = \"a\"\n"
            ),
        )]);
        let config = files.load().config.expect("valid");
        assert_eq!(
            config.cluster.live_bus.as_ref().map(|s| s.expose()),
            Some("redis://127.0.0.1:6379/0")
        );
        assert_eq!(config.cluster.channel_prefix, "prod");
        assert_eq!(config.cluster.node_id.as_deref(), Some("a"));
    }
}
