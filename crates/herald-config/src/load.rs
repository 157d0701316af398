//! Loading: read the files, walk their tables, resolve secrets, check every rule, and
//! collect every problem with its location.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use herald_core::event::check_event_type;
use herald_core::{EventKind, EventTypeRegistry, Matcher, Pattern, Secret, Subscription, TeamId};
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

const DEFAULT_LISTEN: &str = "127.0.0.1:8650";
const DEFAULT_MAX_BODY: u64 = 1024 * 1024;
const DEFAULT_RETRY_SCHEDULE: [u64; 7] = [5, 300, 1800, 7200, 18000, 36000, 36000];
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);
const DEFAULT_TELEGRAM_API: &str = "https://api.telegram.org";
const TEAM_KEYS: &str = "api_keys, channels, subscriptions, description";
const TOP_KEYS: &str =
    "include, server, store, delivery, telegram, email, plugins, event_types, teams";
const MAX_PLUGIN_TIMEOUT: Duration = Duration::from_secs(5);
const MIN_PLUGIN_MEMORY: u64 = 1024 * 1024;
const MAX_PLUGIN_MEMORY: u64 = 256 * 1024 * 1024;
const CHANNEL_KINDS: &str = "webhook, telegram, email, file";

/// A value and the file it came from.
struct In<T> {
    file: usize,
    value: T,
}

struct TeamDraft {
    id: TeamId,
    at: Location,
    api_keys: Vec<(Spanned<String>, usize)>,
    channels: BTreeMap<String, (Location, Option<ChannelConfig>)>,
    subscriptions: Vec<In<RawSubscription>>,
    /// Subscriptions too broken to read: their channel is unknown, so unused-channel
    /// warnings would be guesses.
    unreadable_subscriptions: usize,
}

#[derive(Default)]
struct Sections {
    server: Option<In<RawServer>>,
    store: Option<In<RawStore>>,
    delivery: Option<In<RawDelivery>>,
    telegram: Option<In<RawTelegram>>,
    email: Option<In<RawEmail>>,
    event_types: Vec<In<RawEventType>>,
    teams: BTreeMap<String, TeamDraft>,
    /// `[plugins.NAME]`; `None` when the table could not be read.
    plugins: Vec<(String, Option<In<RawPlugin>>)>,
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
            let message = err.message().trim_end().to_string();
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

    fn plugins(&mut self, value: Spanned<DeValue<'_>>, file: usize) {
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
    fn plugin_configs(
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
    fn settings(
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

    fn event_types(&mut self, value: Spanned<DeValue<'_>>, file: usize) {
        let span = value.span();
        match value.into_inner() {
            DeValue::Array(items) => {
                for item in items {
                    if let Some(value) = self.de::<RawEventType>(item, file) {
                        self.sections.event_types.push(In { file, value });
                    }
                }
            }
            other => self.error(
                format!(
                    "`event_types` must be an array of tables ([[event_types]]), found {}",
                    other.type_str()
                ),
                at(file, span),
            ),
        }
    }

    fn teams(&mut self, value: Spanned<DeValue<'_>>, file: usize) {
        let span = value.span();
        let DeValue::Table(teams) = value.into_inner() else {
            self.error(
                "`teams` must be a table of teams ([teams.NAME])",
                at(file, span),
            );
            return;
        };
        for (name, body) in teams {
            let name_loc = Location {
                file,
                span: name.span(),
            };
            let id = match TeamId::parse(name.get_ref()) {
                Ok(id) => id,
                Err(err) => {
                    self.error(err, Some(name_loc));
                    continue;
                }
            };
            if let Some(first) = self.sections.teams.get(id.as_str()) {
                let first = self
                    .diags
                    .locate(&Diagnostic::error("", Some(first.at.clone())));
                self.error(
                    format!("team `{id}` is already defined at {first}"),
                    Some(name_loc),
                );
                continue;
            }
            let body_span = body.span();
            let DeValue::Table(body) = body.into_inner() else {
                self.error(format!("team `{id}` must be a table"), at(file, body_span));
                continue;
            };
            let mut draft = TeamDraft {
                id: id.clone(),
                at: name_loc,
                api_keys: Vec::new(),
                channels: BTreeMap::new(),
                subscriptions: Vec::new(),
                unreadable_subscriptions: 0,
            };
            for (key, value) in body {
                match key.get_ref().as_ref() {
                    "api_keys" => {
                        if let Some(keys) = self.de::<Vec<Spanned<String>>>(value, file) {
                            draft.api_keys.extend(keys.into_iter().map(|k| (k, file)));
                        }
                    }
                    "description" => {
                        self.de::<String>(value, file);
                    }
                    "channels" => self.channels(&mut draft, value, file),
                    "subscriptions" => {
                        let span = value.span();
                        match value.into_inner() {
                            DeValue::Array(items) => {
                                for item in items {
                                    match self.de::<RawSubscription>(item, file) {
                                        Some(value) => draft.subscriptions.push(In { file, value }),
                                        None => draft.unreadable_subscriptions += 1,
                                    }
                                }
                            }
                            _ => self.error(
                                "`subscriptions` must be an array of tables ([[teams.NAME.subscriptions]])",
                                at(file, span),
                            ),
                        }
                    }
                    other => self.error(
                        format!(
                            "unknown key `{other}` in team `{id}`; expected one of {TEAM_KEYS}"
                        ),
                        at(file, key.span()),
                    ),
                }
            }
            self.sections.teams.insert(id.as_str().to_string(), draft);
        }
    }

    fn channels(&mut self, draft: &mut TeamDraft, value: Spanned<DeValue<'_>>, file: usize) {
        let span = value.span();
        let DeValue::Table(channels) = value.into_inner() else {
            self.error(
                "`channels` must be a table of channels ([teams.NAME.channels.CHANNEL])",
                at(file, span),
            );
            return;
        };
        for (name, body) in channels {
            let loc = Location {
                file,
                span: name.span(),
            };
            let name = name.get_ref().to_string();
            if let Err(err) = check_name("channel", &name) {
                self.error(err, Some(loc));
                continue;
            }
            let kind = body
                .get_ref()
                .get("type")
                .map(|t| (t.get_ref().as_str().map(str::to_string), t.span()));
            let config = match kind {
                None => {
                    self.error(
                        format!("channel `{name}` has no `type`; expected one of {CHANNEL_KINDS}"),
                        Some(loc.clone()),
                    );
                    None
                }
                Some((Some(kind), span)) => self.channel(&kind, span, body, file),
                Some((None, span)) => {
                    self.error(
                        format!("`type` must be a string, one of {CHANNEL_KINDS}"),
                        at(file, span),
                    );
                    None
                }
            };
            draft.channels.insert(name, (loc, config));
        }
    }

    fn channel(
        &mut self,
        kind: &str,
        kind_span: std::ops::Range<usize>,
        body: Spanned<DeValue<'_>>,
        file: usize,
    ) -> Option<ChannelConfig> {
        match kind {
            "webhook" => {
                let raw: RawWebhook = self.de(body, file)?;
                let url = match url::Url::parse(raw.url.get_ref()) {
                    Ok(url) if matches!(url.scheme(), "http" | "https") => Some(url),
                    Ok(url) => {
                        self.error(
                            format!("webhook url must be http or https, not `{}`", url.scheme()),
                            at(file, raw.url.span()),
                        );
                        None
                    }
                    Err(err) => {
                        self.error(
                            format!("invalid webhook url: {err}"),
                            at(file, raw.url.span()),
                        );
                        None
                    }
                };
                let secret = match &raw.secret {
                    Some(s) => {
                        let secret = self.secret(s, file, "webhook secret")?;
                        if let Err(err) = check_webhook_secret(secret.expose()) {
                            self.error(err, at(file, s.span()));
                            return None;
                        }
                        Some(secret)
                    }
                    None => None,
                };
                Some(ChannelConfig::Webhook(WebhookChannelConfig {
                    url: url?,
                    secret,
                }))
            }
            "telegram" => {
                let raw: RawTelegramChannel = self.de(body, file)?;
                Some(ChannelConfig::Telegram(TelegramChannelConfig {
                    chat_id: raw.chat_id,
                    message_thread_id: raw.message_thread_id,
                    parse_mode: raw.parse_mode,
                    disable_notification: raw.disable_notification,
                }))
            }
            "email" => {
                let raw: RawEmailChannel = self.de(body, file)?;
                if raw.to.get_ref().is_empty() {
                    self.error(
                        "an email channel needs at least one address in `to`",
                        at(file, raw.to.span()),
                    );
                }
                let mut ok = true;
                for addr in raw.to.get_ref().iter().chain(raw.cc.iter()) {
                    if let Err(err) = check_address(addr.get_ref()) {
                        self.error(err, at(file, addr.span()));
                        ok = false;
                    }
                }
                ok.then(|| {
                    ChannelConfig::Email(EmailChannelConfig {
                        to: raw
                            .to
                            .into_inner()
                            .into_iter()
                            .map(Spanned::into_inner)
                            .collect(),
                        cc: raw.cc.into_iter().map(Spanned::into_inner).collect(),
                        subject_prefix: raw.subject_prefix,
                    })
                })
            }
            "file" => {
                let raw: RawFileChannel = self.de(body, file)?;
                Some(ChannelConfig::File(FileChannelConfig {
                    path: self.base_dir.join(raw.path),
                }))
            }
            other => {
                self.error(
                    format!("unknown channel type `{other}`; expected one of {CHANNEL_KINDS}"),
                    at(file, kind_span),
                );
                None
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

    /// Checks everything that spans sections, and assembles the configuration.
    fn build(&mut self, path: &Path) -> Option<Config> {
        let sections = std::mem::take(&mut self.sections);
        let server = self.server(sections.server);
        let store = StoreConfig {
            path: self.base_dir.join(
                sections
                    .store
                    .and_then(|s| s.value.path)
                    .unwrap_or_else(|| "data".into()),
            ),
        };
        let delivery = self.delivery(sections.delivery);
        let telegram = match sections.telegram {
            Some(In { file, value }) => {
                let bot_token = self.secret(&value.bot_token, file, "Telegram bot token");
                let api_url = match value.api_url {
                    Some(u) => match url::Url::parse(u.get_ref()) {
                        Ok(_) => Some(u.into_inner()),
                        Err(err) => {
                            self.error(format!("invalid api_url: {err}"), at(file, u.span()));
                            None
                        }
                    },
                    None => Some(DEFAULT_TELEGRAM_API.to_string()),
                };
                bot_token
                    .zip(api_url)
                    .map(|(bot_token, api_url)| TelegramConfig {
                        bot_token,
                        api_url,
                        commands: value.commands,
                    })
            }
            None => None,
        };
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
        Some(Config {
            source: path.to_path_buf(),
            server: server?,
            store,
            delivery: delivery?,
            telegram,
            email,
            teams,
            matcher: Matcher::new(registry, subscriptions),
            plugins,
            formatter_settings: std::mem::take(&mut self.formatter_settings),
        })
    }

    fn server(&mut self, raw: Option<In<RawServer>>) -> Option<ServerConfig> {
        let Some(In { file, value }) = raw else {
            return Some(ServerConfig {
                listen: DEFAULT_LISTEN.parse().ok()?,
                admin_token: None,
                max_body_bytes: DEFAULT_MAX_BODY as usize,
            });
        };
        let listen = match &value.listen {
            Some(l) => {
                match l.get_ref().parse::<SocketAddr>() {
                    Ok(addr) => Some(addr),
                    Err(_) => {
                        self.error(
                        format!("invalid listen address `{}`: write IP:PORT, e.g. \"127.0.0.1:8650\"", l.get_ref()),
                        at(file, l.span()),
                    );
                        None
                    }
                }
            }
            None => DEFAULT_LISTEN.parse().ok(),
        };
        let admin_token = match &value.admin_token {
            Some(t) => Some(self.secret(t, file, "admin token")?),
            None => None,
        };
        let max_body_bytes = match &value.max_body_bytes {
            Some(m) if !(1024..=64 * 1024 * 1024).contains(m.get_ref()) => {
                self.error(
                    "max_body_bytes must be between 1024 and 67108864",
                    at(file, m.span()),
                );
                None
            }
            Some(m) => Some(*m.get_ref()),
            None => Some(DEFAULT_MAX_BODY),
        };
        Some(ServerConfig {
            listen: listen?,
            admin_token,
            max_body_bytes: usize::try_from(max_body_bytes?).ok()?,
        })
    }

    fn delivery(&mut self, raw: Option<In<RawDelivery>>) -> Option<DeliveryConfig> {
        let default_schedule: Vec<Duration> = DEFAULT_RETRY_SCHEDULE
            .iter()
            .map(|s| Duration::from_secs(*s))
            .collect();
        let Some(In { file, value }) = raw else {
            return Some(DeliveryConfig {
                retry_schedule: default_schedule,
                timeout: DEFAULT_TIMEOUT,
                allow_private_networks: false,
                concurrency_per_channel: None,
                max_concurrency_per_channel: DEFAULT_MAX_CONCURRENCY_PER_CHANNEL,
                workers: DEFAULT_WORKERS,
            });
        };
        let mut ok = true;
        let retry_schedule = match &value.retry_schedule {
            Some(list) => {
                if list.get_ref().len() > 50 {
                    self.error(
                        "retry_schedule may list at most 50 delays",
                        at(file, list.span()),
                    );
                    ok = false;
                }
                let mut out = Vec::new();
                for item in list.get_ref() {
                    match self.duration(item, file, "retry delay") {
                        Some(d) => out.push(d),
                        None => ok = false,
                    }
                }
                out
            }
            None => default_schedule,
        };
        let timeout = match &value.timeout {
            Some(t) => match self.duration(t, file, "timeout") {
                Some(d) if d < Duration::from_millis(100) || d > Duration::from_secs(600) => {
                    self.error("timeout must be between 100ms and 10m", at(file, t.span()));
                    None
                }
                other => other,
            },
            None => Some(DEFAULT_TIMEOUT),
        };
        let mut bounded = |v: &Option<Spanned<u32>>, default: u32, name: &str| match v {
            Some(n) if !(1..=1024).contains(n.get_ref()) => {
                self.error(
                    format!("{name} must be between 1 and 1024"),
                    at(file, n.span()),
                );
                None
            }
            Some(n) => Some(*n.get_ref() as usize),
            None => Some(default as usize),
        };
        // Absent: adaptive (learnt per channel up to the ceiling); set: pinned.
        let concurrency_per_channel = match &value.concurrency_per_channel {
            Some(_) => {
                bounded(&value.concurrency_per_channel, 1, "concurrency_per_channel").map(Some)
            }
            None => Some(None),
        };
        let max_concurrency_per_channel = bounded(
            &value.max_concurrency_per_channel,
            DEFAULT_MAX_CONCURRENCY_PER_CHANNEL as u32,
            "max_concurrency_per_channel",
        );
        let workers = bounded(&value.workers, DEFAULT_WORKERS as u32, "workers");
        if !ok {
            return None;
        }
        Some(DeliveryConfig {
            retry_schedule,
            timeout: timeout?,
            allow_private_networks: value.allow_private_networks,
            concurrency_per_channel: concurrency_per_channel?,
            max_concurrency_per_channel: max_concurrency_per_channel?,
            workers: workers?,
        })
    }

    fn email(&mut self, value: RawEmail, file: usize) -> Option<EmailConfig> {
        let smtp_ok = match url::Url::parse(value.smtp_url.get_ref()) {
            Ok(u) if matches!(u.scheme(), "smtp" | "smtps") && u.host_str().is_some() => true,
            Ok(_) => {
                self.error(
                    "smtp_url must be smtp://host:port (plain or ?tls=required) or smtps://host:port",
                    at(file, value.smtp_url.span()),
                );
                false
            }
            Err(err) => {
                self.error(
                    format!("invalid smtp_url: {err}"),
                    at(file, value.smtp_url.span()),
                );
                false
            }
        };
        let from_ok = match check_address(value.from.get_ref()) {
            Ok(()) => true,
            Err(err) => {
                self.error(err, at(file, value.from.span()));
                false
            }
        };
        let username = match &value.username {
            Some(u) => Some(self.secret(u, file, "SMTP username")?),
            None => None,
        };
        let password = match &value.password {
            Some(p) => Some(self.secret(p, file, "SMTP password")?),
            None => None,
        };
        (smtp_ok && from_ok).then(|| EmailConfig {
            smtp_url: value.smtp_url.into_inner(),
            from: value.from.into_inner(),
            username,
            password,
        })
    }

    fn registry(&mut self, types: Vec<In<RawEventType>>) -> EventTypeRegistry {
        let mut registry = EventTypeRegistry::new();
        let mut first_at: BTreeMap<String, Location> = BTreeMap::new();
        for In { file, value } in types {
            let loc = Location {
                file,
                span: value.name.span(),
            };
            let name = value.name.into_inner();
            if let Err(err) = check_event_type(&name) {
                self.error(err, Some(loc));
                continue;
            }
            if let Some(first) = first_at.get(&name) {
                let first = self
                    .diags
                    .locate(&Diagnostic::error("", Some(first.clone())));
                self.error(
                    format!("event type `{name}` is declared twice (first at {first})"),
                    Some(loc),
                );
                continue;
            }
            first_at.insert(name.clone(), loc);
            let kind = if value.transient {
                EventKind::Transient
            } else {
                EventKind::Durable
            };
            registry.declare(name, kind);
        }
        registry
    }

    fn teams_and_subscriptions(
        &mut self,
        drafts: BTreeMap<String, TeamDraft>,
        registry: &EventTypeRegistry,
        admin_token: Option<Secret>,
        have_telegram: bool,
        have_email: bool,
    ) -> (BTreeMap<TeamId, TeamConfig>, Vec<Subscription>) {
        let mut teams = BTreeMap::new();
        let mut subscriptions = Vec::new();
        // Every resolved key with its team and location, to find keys used twice.
        let mut keys_seen: Vec<(Secret, TeamId, Location)> = Vec::new();
        for (_, draft) in drafts {
            let TeamDraft {
                id,
                at: team_at,
                api_keys,
                channels,
                subscriptions: raw_subs,
                unreadable_subscriptions,
            } = draft;
            let mut resolved_keys = Vec::new();
            for (key, file) in &api_keys {
                let loc = Location {
                    file: *file,
                    span: key.span(),
                };
                let Some(secret) = self.secret(key, *file, &format!("API key of team `{id}`"))
                else {
                    continue;
                };
                if admin_token.as_ref() == Some(&secret) {
                    self.error(
                        format!("this API key of team `{id}` is the same as [server] admin_token"),
                        Some(loc.clone()),
                    );
                }
                if let Some((_, other, first)) = keys_seen.iter().find(|(s, _, _)| *s == secret) {
                    let first = self
                        .diags
                        .locate(&Diagnostic::error("", Some(first.clone())));
                    let message = if *other == id {
                        format!("this API key is listed twice for team `{id}` (first at {first})")
                    } else {
                        format!(
                            "this API key is already used by team `{other}` (at {first}); each key must belong to one team"
                        )
                    };
                    self.error(message, Some(loc));
                    continue;
                }
                keys_seen.push((secret.clone(), id.clone(), loc));
                resolved_keys.push(secret);
            }
            if api_keys.is_empty() {
                self.diags.push(Diagnostic::warning(
                    format!("team `{id}` has no api_keys: nothing can publish events for it"),
                    Some(team_at.clone()),
                ));
            }
            let mut used: BTreeMap<&str, bool> =
                channels.keys().map(|k| (k.as_str(), false)).collect();
            for (index, In { file, value: raw }) in raw_subs.into_iter().enumerate() {
                if let Some(u) = used.get_mut(raw.channel.get_ref().as_str()) {
                    *u = true;
                }
                if let Some(sub) = self.subscription(&id, index, raw, file, &channels, registry) {
                    subscriptions.push(sub);
                }
            }
            let mut configs = BTreeMap::new();
            for (name, (loc, config)) in &channels {
                match config {
                    Some(ChannelConfig::Telegram(_)) if !have_telegram => self.error(
                        format!("channel `{name}` is a telegram channel, but there is no [telegram] section with a bot_token"),
                        Some(loc.clone()),
                    ),
                    Some(ChannelConfig::Email(_)) if !have_email => self.error(
                        format!("channel `{name}` is an email channel, but there is no [email] section with an smtp_url"),
                        Some(loc.clone()),
                    ),
                    _ => {}
                }
                if unreadable_subscriptions == 0 && used.get(name.as_str()) == Some(&false) {
                    self.diags.push(
                        Diagnostic::warning(
                            format!("channel `{name}` of team `{id}` has no subscription: nothing will be sent to it"),
                            Some(loc.clone()),
                        )
                        .with_label("declared here"),
                    );
                }
                if let Some(config) = config {
                    configs.insert(name.clone(), config.clone());
                }
            }
            teams.insert(
                id.clone(),
                TeamConfig {
                    id,
                    api_keys: resolved_keys,
                    channels: configs,
                },
            );
        }
        (teams, subscriptions)
    }

    fn subscription(
        &mut self,
        team: &TeamId,
        index: usize,
        raw: RawSubscription,
        file: usize,
        channels: &BTreeMap<String, (Location, Option<ChannelConfig>)>,
        registry: &EventTypeRegistry,
    ) -> Option<Subscription> {
        let mut ok = true;
        if !channels.contains_key(raw.channel.get_ref()) {
            let known: Vec<&str> = channels.keys().map(String::as_str).collect();
            let known = if known.is_empty() {
                "it declares none".to_string()
            } else {
                format!("it has: {}", known.join(", "))
            };
            self.diags.push(
                Diagnostic::error(
                    format!(
                        "unknown channel `{}`: team `{team}` declares no such channel ({known})",
                        raw.channel.get_ref()
                    ),
                    at(file, raw.channel.span()),
                )
                .with_label("not a channel of this team"),
            );
            ok = false;
        }
        if raw.events.get_ref().is_empty() {
            self.error(
                "a subscription needs at least one event pattern",
                at(file, raw.events.span()),
            );
            ok = false;
        }
        let mut patterns = Vec::new();
        for p in raw.events.get_ref() {
            let parsed = Pattern::parse(p.get_ref())
                .map_err(|e| e.to_string())
                .and_then(|pattern| registry.check_subscribable(&pattern).map(|()| pattern));
            match parsed {
                Ok(pattern) => patterns.push(pattern),
                Err(err) => {
                    self.error(err, at(file, p.span()));
                    ok = false;
                }
            }
        }
        if let Some(f) = &raw.formatter
            && !self.plugin_names.contains(f.get_ref())
        {
            let known = if self.plugin_names.is_empty() {
                format!("; declare it under [plugins.{}] with a path", f.get_ref())
            } else {
                format!(" (configured: {})", self.plugin_names.join(", "))
            };
            self.error(
                format!(
                    "formatter `{}` is not a configured plugin{known}",
                    f.get_ref()
                ),
                at(file, f.span()),
            );
            ok = false;
        }
        let id = herald_core::SubscriptionId {
            team: team.clone(),
            index,
        };
        if let Some(settings) = raw.formatter_settings {
            let span = settings.span();
            if raw.formatter.is_none() {
                self.error(
                    "formatter_settings needs a formatter: add formatter = \"PLUGIN\"",
                    at(file, span),
                );
                ok = false;
            }
            match self.settings(settings.into_inner(), file) {
                Some(settings) if ok => {
                    self.formatter_settings.insert(id.clone(), settings);
                }
                Some(_) => {}
                None => ok = false,
            }
        }
        ok.then(|| Subscription {
            id,
            name: raw.name,
            channel: raw.channel.into_inner(),
            patterns,
            outcome: raw.outcome,
            metadata: raw.metadata,
            active: raw.active,
            formatter: raw.formatter.map(Spanned::into_inner),
        })
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

/// A Standard Webhooks secret: `whsec_` followed by base64 of 24 to 64 bytes.
fn check_webhook_secret(secret: &str) -> Result<(), String> {
    let Some(b64) = secret.strip_prefix("whsec_") else {
        return Err("webhook secret must start with `whsec_` (Standard Webhooks format)".into());
    };
    let valid_chars = b64
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=');
    let decoded_len = b64.trim_end_matches('=').len() * 3 / 4;
    if !valid_chars || b64.len() % 4 != 0 || !(24..=64).contains(&decoded_len) {
        return Err(
            "webhook secret must be `whsec_` followed by standard base64 of 24 to 64 bytes".into(),
        );
    }
    Ok(())
}

/// A mailbox: `addr@host` or `Name <addr@host>`, with no line breaks.
fn check_address(addr: &str) -> Result<(), String> {
    let inner = match (addr.find('<'), addr.rfind('>')) {
        (Some(l), Some(r)) if l < r && r == addr.len() - 1 => &addr[l + 1..r],
        (None, None) => addr,
        _ => return Err(format!("invalid email address `{addr}`")),
    };
    let valid = !addr.contains(['\r', '\n'])
        && inner.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && !domain.is_empty() && !inner.contains(char::is_whitespace)
        });
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid email address `{addr}`: expected user@host or `Name <user@host>`"
        ))
    }
}

#[cfg(test)]
mod tests;
