//! Loading: read the files, walk their tables, resolve secrets, check every rule, and
//! collect every problem with its location.
//!
//! This file holds what every section shares: reading and including files, the
//! top-level keys, the one-pass deserialisation ([`Loader::de`]), secrets, durations, and
//! assembling the [`Config`]. Each section's rules live in their own module under
//! `load/`, as an `impl Loader` block with its data-driven tests next to it. A new
//! section gets a new file there, a field in [`Sections`] and an arm in [`Loader::file`].

mod channels;
mod cluster;
mod delivery;
mod email;
mod event_types;
mod plugins;
mod retention;
mod server;
mod sources;
mod store;
mod subscriptions;
mod teams;
mod telegram;

#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use herald_core::{Matcher, Secret, TeamId};
use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use crate::diagnostic::{Diagnostic, Diagnostics, Location};
use crate::model::*;
use crate::raw::*;

/// Looks up an environment variable (injected so tests and `herald check` stay pure).
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The result of a load: the configuration when there is no error, and every diagnostic
/// (warnings come with a valid configuration too).
#[derive(Debug)]
pub struct LoadOutcome {
    pub config: Option<Config>,
    pub diagnostics: Diagnostics,
}

/// Loads `path` with the process environment.
pub fn load(path: &Path) -> LoadOutcome {
    load_with_env(path, &|name| std::env::var(name).ok())
}

/// Loads `path`, resolving `env:` secrets through `env`.
pub fn load_with_env(path: &Path, env: Env<'_>) -> LoadOutcome {
    let base_dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let mut loader = Loader {
        env,
        base_dir,
        diags: Diagnostics::default(),
        sections: Sections::default(),
        plugin_names: Vec::new(),
        formatter_settings: BTreeMap::new(),
    };
    loader.file(path.to_path_buf(), None);
    let config = loader.build(path);
    let mut diagnostics = loader.diags;
    diagnostics.sort();
    let config = if diagnostics.has_errors() {
        None
    } else {
        config
    };
    LoadOutcome {
        config,
        diagnostics,
    }
}

const TOP_KEYS: &str = "include, server, store, retention, delivery, telegram, email, plugins, event_types, teams, sources, cluster";

/// A value and the file it came from.
struct In<T> {
    file: usize,
    value: T,
}

/// One team as read, before the checks that span its channels and subscriptions.
struct TeamDraft {
    id: TeamId,
    at: Location,
    api_keys: Vec<(Spanned<String>, usize)>,
    channels: BTreeMap<String, (Location, Option<ChannelConfig>)>,
    /// `throttle` of the channels that set one (valid ones only).
    channel_throttles: BTreeMap<String, herald_core::Throttle>,
    subscriptions: Vec<In<RawSubscription>>,
    /// Subscriptions too broken to read: their channel is unknown, so unused-channel
    /// warnings would be guesses.
    unreadable_subscriptions: usize,
    /// `alerts = "CHANNEL"`, with the file it is in.
    alerts: Option<(Spanned<String>, usize)>,
    /// `alert_dead_letters = N`, with the file it is in.
    alert_dead_letters: Option<(Spanned<u64>, usize)>,
}

#[derive(Default)]
struct Sections {
    server: Option<In<RawServer>>,
    store: Option<In<RawStore>>,
    retention: Option<In<RawRetention>>,
    delivery: Option<In<RawDelivery>>,
    telegram: Option<In<RawTelegram>>,
    email: Option<In<RawEmail>>,
    event_types: Vec<In<RawEventType>>,
    teams: BTreeMap<String, TeamDraft>,
    /// `[plugins.NAME]`; `None` when the table could not be read.
    plugins: Vec<(String, Option<In<RawPlugin>>)>,
    /// `[[sources]]` as read; teams and names are checked in `build`.
    sources: Vec<In<sources::SourceDraft>>,
    cluster: Option<In<RawCluster>>,
}

struct Loader<'e> {
    env: Env<'e>,
    base_dir: PathBuf,
    diags: Diagnostics,
    sections: Sections,
    /// Every declared plugin name, valid or not, so a subscription naming a broken
    /// plugin is not also told the plugin does not exist.
    plugin_names: Vec<String>,
    formatter_settings: BTreeMap<herald_core::SubscriptionId, BTreeMap<String, String>>,
}

fn at(file: usize, span: std::ops::Range<usize>) -> Option<Location> {
    Some(Location { file, span })
}

impl Loader<'_> {
    fn error(&mut self, message: impl Into<String>, location: Option<Location>) {
        self.diags.push(Diagnostic::error(message, location));
    }

    /// Reads and walks one file. `included_from` is the location of the include entry.
    fn file(&mut self, path: PathBuf, included_from: Option<Location>) {
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) => {
                self.error(
                    format!("cannot read {}: {err}", path.display()),
                    included_from,
                );
                return;
            }
        };
        let is_main = included_from.is_none();
        let file = self.diags.sources.add(path, text.clone());
        let (doc, errors) = DeTable::parse_recoverable(&text);
        // Before any error is reported: a syntax error shows the lines around it.
        let secrets = crate::redact::secret_spans(doc.get_ref());
        self.diags.sources.hide(file, secrets);
        if !errors.is_empty() {
            for err in errors {
                let loc = err.span().and_then(|s| at(file, s));
                self.error(format!("invalid TOML: {}", err.message().trim_end()), loc);
            }
            return;
        }
        for (key, value) in doc.into_inner() {
            let key_loc = at(file, key.span());
            let main_only = |this: &mut Self, name: &str| {
                if !is_main {
                    this.error(
                        format!("`{name}` may only be set in the main configuration file"),
                        key_loc.clone(),
                    );
                }
                is_main
            };
            match key.get_ref().as_ref() {
                "include" => {
                    if main_only(self, "include")
                        && let Some(globs) = self.de::<Vec<Spanned<String>>>(value, file)
                    {
                        for glob in globs {
                            self.include(glob, file);
                        }
                    }
                }
                "server" => {
                    if main_only(self, "server") {
                        self.sections.server = self.de(value, file).map(|value| In { file, value });
                    }
                }
                "store" => {
                    if main_only(self, "store") {
                        self.sections.store = self.de(value, file).map(|value| In { file, value });
                    }
                }
                "retention" => {
                    if main_only(self, "retention") {
                        self.sections.retention =
                            self.de(value, file).map(|value| In { file, value });
                    }
                }
                "delivery" => {
                    if main_only(self, "delivery") {
                        self.sections.delivery =
                            self.de(value, file).map(|value| In { file, value });
                    }
                }
                "telegram" => {
                    if main_only(self, "telegram") {
                        self.sections.telegram =
                            self.de(value, file).map(|value| In { file, value });
                    }
                }
                "email" => {
                    if main_only(self, "email") {
                        self.sections.email = self.de(value, file).map(|value| In { file, value });
                    }
                }
                "plugins" => {
                    if main_only(self, "plugins") {
                        self.plugins(value, file);
                    }
                }
                "sources" => {
                    if main_only(self, "sources") {
                        self.sources(value, file);
                    }
                }
                "cluster" => {
                    if main_only(self, "cluster") {
                        self.sections.cluster =
                            self.de(value, file).map(|value| In { file, value });
                    }
                }
                "event_types" => self.event_types(value, file),
                "teams" => self.teams(value, file),
                other => self.error(
                    format!("unknown key `{other}`; expected one of {TOP_KEYS}"),
                    key_loc,
                ),
            }
        }
    }

    fn include(&mut self, glob: Spanned<String>, file: usize) {
        let loc = at(file, glob.span());
        let pattern = self.base_dir.join(glob.get_ref());
        let paths = match glob::glob(&pattern.to_string_lossy()) {
            Ok(paths) => paths,
            Err(err) => {
                self.error(format!("invalid include pattern: {err}"), loc);
                return;
            }
        };
        let mut found: Vec<PathBuf> = paths.filter_map(Result::ok).collect();
        found.sort();
        if found.is_empty() {
            self.diags.push(Diagnostic::warning(
                format!("include `{}` matches no file", glob.get_ref()),
                loc.clone(),
            ));
        }
        for path in found {
            self.file(path, loc.clone());
        }
    }

    /// Deserialises one value, recording the error (with its span) if it does not fit.
    ///
    /// To report every problem of a table in one pass rather than the first only, an
    /// entry that caused an error is dropped and the table is deserialised again, until it
    /// fits or the remaining error is not tied to one entry. The partial value that then
    /// fits is returned so later checks (channel names, patterns) still run; the errors
    /// already recorded keep the configuration from being accepted.
    fn de<T: DeserializeOwned>(&mut self, value: Spanned<DeValue<'_>>, file: usize) -> Option<T> {
        let whole = value.span();
        let mut value = value;
        let mut dropped: Vec<String> = Vec::new();
        loop {
            let err = match T::deserialize(ValueDeserializer::from(value.clone())) {
                Ok(v) => return Some(v),
                Err(err) => err,
            };
            let span = err.span().unwrap_or_else(|| whole.clone());
            let mut message = err.message().trim_end().to_string();
            if self.diags.sources.is_hidden(file, &span) {
                message = crate::redact::hide_value(&message);
            }
            // A field we dropped ourselves is now "missing": that is not news.
            let consequence = dropped
                .iter()
                .any(|k| message == format!("missing field `{k}`"));
            if !consequence {
                self.error(message, at(file, span.clone()));
            }
            let DeValue::Table(table) = value.get_mut() else {
                return None;
            };
            let culprit = table
                .iter()
                .find(|(k, v)| {
                    let entry = k.span().start..v.span().end.max(k.span().end);
                    entry.start <= span.start && span.end <= entry.end
                })
                .map(|(k, _)| k.get_ref().to_string());
            match culprit {
                Some(key) if !consequence => {
                    *table = std::mem::take(table)
                        .into_iter()
                        .filter(|(k, _)| k.get_ref().as_ref() != key.as_str())
                        .collect();
                    dropped.push(key);
                }
                _ => return None,
            }
        }
    }

    /// Resolves a secret written literally or as `env:NAME`.
    fn secret(&mut self, value: &Spanned<String>, file: usize, what: &str) -> Option<Secret> {
        let Some(name) = value.get_ref().strip_prefix("env:") else {
            return Some(Secret::new(value.get_ref().clone()));
        };
        match (self.env)(name) {
            Some(v) if !v.is_empty() => Some(Secret::new(v)),
            Some(_) => {
                self.error(
                    format!("environment variable `{name}` (the {what}) is empty"),
                    at(file, value.span()),
                );
                None
            }
            None => {
                self.diags.push(
                    Diagnostic::error(
                        format!("environment variable `{name}` (the {what}) is not set"),
                        at(file, value.span()),
                    )
                    .with_help(format!("export {name}=… before starting herald")),
                );
                None
            }
        }
    }

    fn duration(&mut self, value: &Spanned<String>, file: usize, what: &str) -> Option<Duration> {
        match humantime::parse_duration(value.get_ref()) {
            Ok(d) => Some(d),
            Err(err) => {
                self.error(
                    format!(
                        "invalid {what} `{}`: {err} (write e.g. \"5s\", \"30m\", \"2h\")",
                        value.get_ref()
                    ),
                    at(file, value.span()),
                );
                None
            }
        }
    }

    /// Like [`Loader::duration`], also refusing values outside `range`: a huge value
    /// (`"500000000000y"`) parses, but would overflow the clock arithmetic done with it.
    fn duration_in(
        &mut self,
        value: &Spanned<String>,
        file: usize,
        what: &str,
        range: std::ops::RangeInclusive<Duration>,
    ) -> Option<Duration> {
        let d = self.duration(value, file, what)?;
        if range.contains(&d) {
            return Some(d);
        }
        self.error(
            format!(
                "{what} `{}` is out of range: write a {what} between {} and {}",
                value.get_ref(),
                humantime::format_duration(*range.start()),
                humantime::format_duration(*range.end()),
            ),
            at(file, value.span()),
        );
        None
    }

    /// Checks everything that spans sections, and assembles the configuration.
    fn build(&mut self, path: &Path) -> Option<Config> {
        let sections = std::mem::take(&mut self.sections);
        let server = self.server(sections.server);
        let store = self.store(sections.store);
        let retention = self.retention(sections.retention);
        let delivery = self.delivery(sections.delivery);
        let telegram = self.telegram(sections.telegram);
        let email = match sections.email {
            Some(In { file, value }) => self.email(value, file),
            None => None,
        };
        let plugins = self.plugin_configs(sections.plugins);
        let registry = self.registry(sections.event_types);
        let (teams, subscriptions) = self.teams_and_subscriptions(
            sections.teams,
            &registry,
            server.as_ref().and_then(|s| s.admin_token.clone()),
            telegram.is_some(),
            email.is_some(),
        );
        let sources = self.source_configs(sections.sources, &teams);
        let cluster = self.cluster(sections.cluster);
        Some(Config {
            source: path.to_path_buf(),
            server: server?,
            store,
            retention: retention?,
            delivery: delivery?,
            telegram,
            email,
            teams,
            matcher: Matcher::new(registry, subscriptions),
            plugins,
            formatter_settings: std::mem::take(&mut self.formatter_settings),
            sources,
            cluster: cluster?,
        })
    }
}

fn check_name(what: &str, name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid {what} name `{name}`: use 1–64 letters, digits, `_` and `-`"
        ))
    }
}
