//! `[[teams.NAME.subscriptions]]`: which channel, which event patterns (only declared,
//! durable types), filters, and the formatter plugin with its settings.

use std::collections::BTreeMap;

use std::time::Duration;

use herald_core::dedup::{DEFAULT_DEDUP_KEY, MAX_DEDUP_WINDOW};
use herald_core::{Dedup, DedupField, EventTypeRegistry, Pattern, Subscription, TeamId};
use toml::Spanned;

use super::{Loader, at};
use crate::diagnostic::{Diagnostic, Location};
use crate::model::ChannelConfig;
use crate::raw::RawSubscription;

impl Loader<'_> {
    pub(super) fn subscription(
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
        let dedup = self.dedup(raw.dedup_window, raw.dedup_key, file, &mut ok);
        ok.then(|| Subscription {
            id,
            name: raw.name.map(Spanned::into_inner),
            channel: raw.channel.into_inner(),
            patterns,
            outcome: raw.outcome,
            metadata: raw.metadata,
            active: raw.active,
            formatter: raw.formatter.map(Spanned::into_inner),
            dedup,
            group: None,
            throttle: None,
        })
    }

    /// `dedup_window` and `dedup_key`: a window of 1s to 30 days, and a key of known,
    /// distinct fields (the default key when only the window is given).
    fn dedup(
        &mut self,
        window: Option<Spanned<String>>,
        key: Option<Spanned<Vec<Spanned<String>>>>,
        file: usize,
        ok: &mut bool,
    ) -> Option<Dedup> {
        let Some(window) = window else {
            if let Some(key) = key {
                self.error(
                    "dedup_key needs a dedup_window: add dedup_window = \"10m\"",
                    at(file, key.span()),
                );
                *ok = false;
            }
            return None;
        };
        let range = Duration::from_secs(1)..=MAX_DEDUP_WINDOW;
        let window = self.duration_in(&window, file, "dedup_window", range);
        let mut fields = Vec::new();
        match &key {
            None => {
                fields = DEFAULT_DEDUP_KEY
                    .iter()
                    .filter_map(|name| DedupField::parse(name).ok())
                    .collect();
            }
            Some(key) if key.get_ref().is_empty() => {
                self.error(
                    format!(
                        "dedup_key must name at least one field ({}); leave it out for the default {:?}",
                        DedupField::NAMES,
                        DEFAULT_DEDUP_KEY
                    ),
                    at(file, key.span()),
                );
                *ok = false;
            }
            Some(key) => {
                for name in key.get_ref() {
                    match DedupField::parse(name.get_ref()) {
                        Ok(field) if fields.contains(&field) => {
                            self.error(
                                format!("dedup key field `{field}` is listed twice"),
                                at(file, name.span()),
                            );
                            *ok = false;
                        }
                        Ok(field) => fields.push(field),
                        Err(message) => {
                            self.error(message, at(file, name.span()));
                            *ok = false;
                        }
                    }
                }
            }
        }
        match window {
            Some(window) if *ok => Some(Dedup { window, fields }),
            Some(_) => None,
            None => {
                *ok = false;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::load::testing::{SUB, check};

    #[test]
    fn unknown_key_in_a_subscription() {
        check(
            "\n[[teams.acme.subscriptions]]\nchannel = \"hook\"\nevents = [\"*\"]\nevent = \"host.down\"\n",
            "herald.toml:21:1: error: unknown field `event`, expected one of `name`, `channel`, `events`, `outcome`, `metadata`, `active`, `formatter`, `formatter_settings`, `dedup_window`, `dedup_key`",
        );
    }

    #[test]
    fn wrong_value_types() {
        check(
            "\n[[teams.acme.subscriptions]]\nchannel = \"hook\"\nevents = \"*\"\n",
            "herald.toml:20:10: error: invalid type: string \"*\", expected a sequence",
        );
    }

    #[test]
    fn unknown_channel_in_a_subscription() {
        check(
            "\n[[teams.acme.subscriptions]]\nchannel = \"hok\"\nevents = [\"*\"]\n",
            "herald.toml:19:11: error: unknown channel `hok`: team `acme` declares no such channel (it has: hook)\nherald.toml:14:22: warning: channel `hook` of team `acme` has no subscription: nothing will be sent to it"
                .split('\n').rev().collect::<Vec<_>>().join("\n").as_str(),
        );
    }

    #[test]
    fn subscribing_to_transient_or_undeclared_types() {
        check(
            "\n[[teams.acme.subscriptions]]\nchannel = \"hook\"\nevents = [\"capsule.state.changed\", \"host.up\", \"ui.*\"]\n",
            "herald.toml:20:11: error: event type `capsule.state.changed` is transient: it goes to the live stream only and cannot be subscribed to\n\
             herald.toml:20:36: error: event type `host.up` is not declared; add it under [[event_types]]\n\
             herald.toml:20:47: error: pattern `ui.*` matches no declared durable event type",
        );
    }

    #[test]
    fn invalid_patterns() {
        check(
            "\n[[teams.acme.subscriptions]]\nchannel = \"hook\"\nevents = [\"capsule.*.x\", \"\", \"**\"]\n",
            "herald.toml:20:11: error: invalid pattern `capsule.*.x`: `*` must be a whole segment and the last one: `*`, or `capsule.*`\n\
             herald.toml:20:26: error: invalid pattern ``: a pattern must not be empty; use `*` for every type\n\
             herald.toml:20:30: error: invalid pattern `**`: `*` must be a whole segment and the last one: `*`, or `capsule.*`",
        );
    }

    #[test]
    fn subscription_names_are_unique_within_a_team() {
        check(
            "\n[[teams.acme.subscriptions]]\nname = \"ops\"\nchannel = \"hook\"\nevents = [\"*\"]\n\n[[teams.acme.subscriptions]]\nname = \"ops\"\nchannel = \"hook\"\nevents = [\"host.down\"]\n",
            "herald.toml:24:8: error: subscription name `ops` is used twice in team `acme`: deliveries find their subscription by it",
        );
    }

    #[test]
    fn dedup_settings_are_checked_with_their_locations() {
        let sub = |tail: &str| {
            format!("\n[[teams.acme.subscriptions]]\nchannel = \"hook\"\nevents = [\"*\"]\n{tail}")
        };
        // A window alone takes the default key; a window with a key is fine.
        check(&sub("dedup_window = \"10m\"\n"), "");
        check(
            &sub(
                "dedup_window = \"2s\"\ndedup_key = [\"event\", \"resource.id\", \"outcome\", \"actor.type\", \"actor.id\", \"resource.type\", \"metadata.region\"]\n",
            ),
            "",
        );
        check(
            &sub("dedup_window = \"ten minutes\"\n"),
            "herald.toml:21:16: error: invalid dedup_window `ten minutes`: expected number at 0 (write e.g. \"5s\", \"30m\", \"2h\")",
        );
        check(
            &sub("dedup_window = \"0s\"\n"),
            "herald.toml:21:16: error: dedup_window `0s` is out of range: write a dedup_window between 1s and 30days",
        );
        check(
            &sub("dedup_window = \"31d\"\n"),
            "herald.toml:21:16: error: dedup_window `31d` is out of range: write a dedup_window between 1s and 30days",
        );
        check(
            &sub("dedup_key = [\"event\"]\n"),
            "herald.toml:21:13: error: dedup_key needs a dedup_window: add dedup_window = \"10m\"",
        );
        check(
            &sub("dedup_window = \"10m\"\ndedup_key = []\n"),
            "herald.toml:22:13: error: dedup_key must name at least one field (event, outcome, resource.type, resource.id, actor.type, actor.id, metadata.KEY); leave it out for the default [\"event\", \"outcome\", \"resource.type\", \"resource.id\"]",
        );
        check(
            &sub(
                "dedup_window = \"10m\"\ndedup_key = [\"event\", \"resource\", \"metadata.\", \"event\"]\n",
            ),
            "herald.toml:22:23: error: unknown dedup key field `resource`; expected one of event, outcome, resource.type, resource.id, actor.type, actor.id, metadata.KEY\n\
             herald.toml:22:35: error: `metadata.` needs a key, as in `metadata.region`\n\
             herald.toml:22:48: error: dedup key field `event` is listed twice",
        );
        check(
            &sub("dedup_window = 600\n"),
            "herald.toml:21:16: error: invalid type: integer `600`, expected a string",
        );
    }

    #[test]
    fn an_unknown_formatter() {
        check(
            &format!(
                "{SUB}[[teams.acme.subscriptions]]\nchannel = \"hook\"\nevents = [\"*\"]\nformatter = \"slack\"\n"
            ),
            "herald.toml:24:13: error: formatter `slack` is not a configured plugin; declare it under [plugins.slack] with a path",
        );
    }
}
