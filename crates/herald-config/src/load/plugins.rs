//! `[plugins.NAME]`: formatter plugins (path, timeout, memory limit, settings), and the
//! settings rule shared with a subscription's `formatter_settings`.

use std::collections::BTreeMap;
use std::time::Duration;

use toml::Spanned;
use toml::de::DeValue;

use super::{In, Loader, at, check_name};
use crate::diagnostic::Location;
use crate::model::{DEFAULT_PLUGIN_MEMORY_LIMIT, DEFAULT_PLUGIN_TIMEOUT, PluginConfig};
use crate::raw::RawPlugin;

const MAX_PLUGIN_TIMEOUT: Duration = Duration::from_secs(5);
const MIN_PLUGIN_MEMORY: u64 = 1024 * 1024;
const MAX_PLUGIN_MEMORY: u64 = 256 * 1024 * 1024;

impl Loader<'_> {
    pub(super) fn plugins(&mut self, value: Spanned<DeValue<'_>>, file: usize) {
        let span = value.span();
        let DeValue::Table(plugins) = value.into_inner() else {
            self.error(
                "`plugins` must be a table of plugins ([plugins.NAME])",
                at(file, span),
            );
            return;
        };
        for (name, body) in plugins {
            let loc = Location {
                file,
                span: name.span(),
            };
            let name = name.get_ref().to_string();
            if let Err(err) = check_name("plugin", &name) {
                self.error(err, Some(loc));
                continue;
            }
            let raw = self
                .de::<RawPlugin>(body, file)
                .map(|value| In { file, value });
            self.sections.plugins.push((name, raw));
        }
    }

    /// Resolves `[plugins.*]`. Only the entries without a problem are returned.
    pub(super) fn plugin_configs(
        &mut self,
        raws: Vec<(String, Option<In<RawPlugin>>)>,
    ) -> BTreeMap<String, PluginConfig> {
        let mut out = BTreeMap::new();
        for (name, raw) in raws {
            self.plugin_names.push(name.clone());
            let Some(In { file, value }) = raw else {
                continue;
            };
            let mut ok = true;
            if value.path.get_ref().is_empty() {
                self.error(
                    "a plugin `path` must not be empty",
                    at(file, value.path.span()),
                );
                ok = false;
            }
            let timeout = match &value.timeout {
                Some(t) => match self.duration(t, file, "plugin timeout") {
                    Some(d) if d < Duration::from_millis(1) || d > MAX_PLUGIN_TIMEOUT => {
                        self.error(
                            "plugin timeout must be between 1ms and 5s",
                            at(file, t.span()),
                        );
                        None
                    }
                    other => other,
                },
                None => Some(DEFAULT_PLUGIN_TIMEOUT),
            };
            let memory_limit = match &value.memory_limit {
                Some(m) => match parse_size(m.get_ref()) {
                    Ok(n) if (MIN_PLUGIN_MEMORY..=MAX_PLUGIN_MEMORY).contains(&n) => Some(n),
                    Ok(_) => {
                        self.error(
                            "memory_limit must be between 1MiB and 256MiB",
                            at(file, m.span()),
                        );
                        None
                    }
                    Err(err) => {
                        self.error(err, at(file, m.span()));
                        None
                    }
                },
                None => Some(DEFAULT_PLUGIN_MEMORY_LIMIT),
            };
            let settings = self.settings(value.settings, file);
            let (Some(timeout), Some(memory_limit), Some(settings), true) =
                (timeout, memory_limit, settings, ok)
            else {
                continue;
            };
            let location = Location {
                file,
                span: value.path.span(),
            };
            out.insert(
                name.clone(),
                PluginConfig {
                    name,
                    path: self.base_dir.join(value.path.into_inner()),
                    timeout,
                    memory_limit,
                    settings,
                    location,
                },
            );
        }
        out
    }

    /// Plugin settings: strings, numbers and booleans, handed to the plugin as strings.
    pub(super) fn settings(
        &mut self,
        raw: BTreeMap<String, Spanned<toml::Value>>,
        file: usize,
    ) -> Option<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (key, value) in raw {
            let text = match value.get_ref() {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    self.error(
                        format!(
                            "setting `{key}` must be a string, number or boolean, not {}",
                            other.type_str()
                        ),
                        at(file, value.span()),
                    );
                    ok = false;
                    continue;
                }
            };
            out.insert(key, text);
        }
        ok.then_some(out)
    }
}

/// `16MiB`, `512 KiB`, `1GiB`, or a number of bytes.
fn parse_size(value: &toml::Value) -> Result<u64, String> {
    let bad = |v: &str| {
        format!("invalid memory_limit `{v}`: write e.g. \"16MiB\", \"512KiB\" or a number of bytes")
    };
    let text = match value {
        toml::Value::Integer(n) => return u64::try_from(*n).map_err(|_| bad(&n.to_string())),
        toml::Value::String(s) => s.as_str(),
        other => return Err(bad(&other.to_string())),
    };
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(split);
    let n: u64 = digits.parse().map_err(|_| bad(text))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1024,
        "MiB" => 1024 * 1024,
        "GiB" => 1024 * 1024 * 1024,
        _ => return Err(bad(text)),
    };
    n.checked_mul(scale).ok_or_else(|| bad(text))
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::diagnostic::Diagnostic;
    use crate::load::testing::{BASE, Files, SUB, check};
    use crate::model::{DEFAULT_PLUGIN_MEMORY_LIMIT, DEFAULT_PLUGIN_TIMEOUT};

    const PLUGIN: &str = "[plugins.slack]\npath = \"plugins/slack.wasm\"\n";

    #[test]
    fn plugins_and_formatters_resolve() {
        let extra = format!(
            "{PLUGIN}timeout = \"20ms\"\nmemory_limit = \"32MiB\"\nsettings = {{ channel = \"#ops\", max = 3, compact = true }}\n\
             [plugins.card]\npath = \"/abs/card.wasm\"\n\
             [[teams.acme.subscriptions]]\nchannel = \"hook\"\nevents = [\"*\"]\nformatter = \"slack\"\nformatter_settings = {{ channel = \"#alerts\", extra = 1.5 }}\n\
             [[teams.acme.subscriptions]]\nchannel = \"hook\"\nevents = [\"*\"]\nformatter = \"card\"\n"
        );
        check(&extra, "");
        let files = Files::new(&[("herald.toml", &format!("{BASE}{extra}"))]);
        let config = files.load().config.unwrap();
        let slack = &config.plugins["slack"];
        assert_eq!(slack.path, files.dir.join("plugins/slack.wasm"));
        assert_eq!(slack.timeout, Duration::from_millis(20));
        assert_eq!(slack.memory_limit, 32 * 1024 * 1024);
        let card = &config.plugins["card"];
        assert_eq!(card.path, Path::new("/abs/card.wasm"));
        assert_eq!(card.timeout, DEFAULT_PLUGIN_TIMEOUT);
        assert_eq!(card.memory_limit, DEFAULT_PLUGIN_MEMORY_LIMIT);
        assert!(card.settings.is_empty());
        assert_eq!(
            files
                .load()
                .diagnostics
                .locate(&Diagnostic::error("", Some(slack.location.clone()))),
            format!("{}:18:8", files.dir.join("herald.toml").display())
        );

        let subs = config.matcher.subscriptions();
        let (plugin, settings) = config
            .formatter(&subs[0])
            .expect("slack formats subscription 0");
        assert_eq!(plugin.name, "slack");
        let settings: Vec<(&str, &str)> = settings
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        // The subscription's settings override the plugin's, key by key.
        assert_eq!(
            settings,
            [
                ("channel", "#alerts"),
                ("compact", "true"),
                ("extra", "1.5"),
                ("max", "3")
            ]
        );
        let (plugin, settings) = config.formatter(&subs[1]).unwrap();
        assert_eq!((plugin.name.as_str(), settings.len()), ("card", 0));
    }

    #[test]
    fn plugin_mistakes() {
        check(
            &format!("{PLUGIN}fuel = 1\n{SUB}"),
            "herald.toml:19:1: error: unknown field `fuel`, expected one of `path`, `timeout`, `memory_limit`, `settings`",
        );
        check(
            &format!("[plugins.slack]\ntimeout = \"10ms\"\n{SUB}"),
            "herald.toml:17:1: error: missing field `path`",
        );
        check(
            &format!("{PLUGIN}timeout = \"10s\"\n{SUB}"),
            "herald.toml:19:11: error: plugin timeout must be between 1ms and 5s",
        );
        check(
            &format!("{PLUGIN}timeout = \"soon\"\n{SUB}"),
            "herald.toml:19:11: error: invalid plugin timeout `soon`: expected number at 0 (write e.g. \"5s\", \"30m\", \"2h\")",
        );
        check(
            &format!("{PLUGIN}memory_limit = \"16 MB\"\n{SUB}"),
            "herald.toml:19:16: error: invalid memory_limit `16 MB`: write e.g. \"16MiB\", \"512KiB\" or a number of bytes",
        );
        check(
            &format!("{PLUGIN}memory_limit = \"1GiB\"\n{SUB}"),
            "herald.toml:19:16: error: memory_limit must be between 1MiB and 256MiB",
        );
        check(&format!("{PLUGIN}memory_limit = 1048576\n{SUB}"), "");
        check(
            &format!(
                "{PLUGIN}settings = {{ ok = \"x\", nested = {{ a = 1 }}, list = [1] }}\n{SUB}"
            ),
            "herald.toml:19:33: error: setting `nested` must be a string, number or boolean, not table\n\
             herald.toml:19:51: error: setting `list` must be a string, number or boolean, not array",
        );
        check(
            &format!("[plugins.\"no spaces\"]\npath = \"x.wasm\"\n{SUB}"),
            "herald.toml:17:10: error: invalid plugin name `no spaces`: use 1–64 letters, digits, `_` and `-`",
        );
        check(
            &format!(
                "{PLUGIN}[[teams.acme.subscriptions]]\nchannel = \"hook\"\nevents = [\"*\"]\nformatter = \"slak\"\n"
            ),
            "herald.toml:22:13: error: formatter `slak` is not a configured plugin (configured: slack)",
        );
        check(
            &format!(
                "{PLUGIN}[[teams.acme.subscriptions]]\nchannel = \"hook\"\nevents = [\"*\"]\nformatter_settings = {{ a = \"b\" }}\n"
            ),
            "herald.toml:22:22: error: formatter_settings needs a formatter: add formatter = \"PLUGIN\"",
        );
        check(
            &format!(
                "{PLUGIN}[[teams.acme.subscriptions]]\nchannel = \"hook\"\nevents = [\"*\"]\nformatter = \"slack\"\nformatter_settings = {{ a = [] }}\n"
            ),
            "herald.toml:23:28: error: setting `a` must be a string, number or boolean, not array",
        );
        // A broken plugin is reported once, not again by every subscription that uses it.
        check(
            &format!(
                "{PLUGIN}timeout = \"1h\"\n[[teams.acme.subscriptions]]\nchannel = \"hook\"\nevents = [\"*\"]\nformatter = \"slack\"\n"
            ),
            "herald.toml:19:11: error: plugin timeout must be between 1ms and 5s",
        );
    }

    #[test]
    fn plugins_belong_in_the_main_file() {
        let files = Files::new(&[
            (
                "herald.toml",
                &format!("include = [\"teams/*.toml\"]\n{BASE}{SUB}"),
            ),
            ("teams/p.toml", "[plugins.x]\npath = \"x.wasm\"\n"),
        ]);
        assert_eq!(
            files.short().trim_end(),
            "teams/p.toml:1:2: error: `plugins` may only be set in the main configuration file"
        );
    }
}
