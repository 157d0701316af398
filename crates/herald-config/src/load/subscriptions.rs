//! `[[teams.NAME.subscriptions]]`: which channel, which event patterns (only declared,
//! durable types), filters, the formatter plugin with its settings, and noise control
//! (repeat suppression, grouping into digests, throttle).

use std::collections::BTreeMap;

use std::time::Duration;

use herald_core::dedup::{DEFAULT_DEDUP_KEY, MAX_DEDUP_WINDOW};
use herald_core::group::{
    DEFAULT_GROUP_INTERVAL, DEFAULT_GROUP_WAIT, DEFAULT_MAX_GROUP_SIZE, MAX_GROUP_INTERVAL,
    MAX_GROUP_WAIT, MAX_MAX_GROUP_SIZE,
};
use herald_core::{
    Dedup, DedupField, EventTypeRegistry, Grouping, Pattern, Subscription, TeamId, Throttle,
    ThrottleScope,
};
use toml::Spanned;

use super::{Loader, at};
use crate::diagnostic::{Diagnostic, Location};
use crate::model::ChannelConfig;
use crate::raw::RawSubscription;

impl Loader<'_> {
    #[allow(clippy::too_many_arguments)] // the team's parts it is checked against
    pub(super) fn subscription(
        &mut self,
        team: &TeamId,
        index: usize,
        raw: RawSubscription,
        file: usize,
        channels: &BTreeMap<String, (Location, Option<ChannelConfig>)>,
        channel_throttles: &BTreeMap<String, Throttle>,
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
        let grouped = raw.group_by.is_some()
            || raw.group_wait.is_some()
            || raw.group_interval.is_some()
            || raw.max_group_size.is_some();
        let group = self.grouping(
            raw.group_by,
            raw.group_wait,
            raw.group_interval,
            raw.max_group_size,
            file,
            &mut ok,
        );
        let throttle = raw
            .throttle
            .and_then(|text| self.throttle(&text, grouped, file, &mut ok));
        let mut sub = ok.then(|| Subscription {
            id,
            name: raw.name.map(Spanned::into_inner),
            channel: raw.channel.into_inner(),
            patterns,
            outcome: raw.outcome,
            metadata: raw.metadata,
            active: raw.active,
            formatter: raw.formatter.map(Spanned::into_inner),
            dedup,
            group,
            throttle: None,
        })?;
        // A grouped subscription is limited by its group_interval: the channel's throttle
        // is not inherited (and its own was refused above).
        sub.throttle = match throttle {
            Some(own) => Some((own, ThrottleScope::Subscription(sub.key()))),
            None if sub.group.is_none() => channel_throttles
                .get(&sub.channel)
                .map(|t| (*t, ThrottleScope::Channel(sub.channel.clone()))),
            None => None,
        };
        Some(sub)
    }

    /// `group_by`, `group_wait`, `group_interval` and `max_group_size`: any of them turns
    /// grouping on (the others take their defaults); `None` when none is set.
    fn grouping(
        &mut self,
        by: Option<Spanned<Vec<Spanned<String>>>>,
        wait: Option<Spanned<String>>,
        interval: Option<Spanned<String>>,
        max_size: Option<Spanned<i64>>,
        file: usize,
        ok: &mut bool,
    ) -> Option<Grouping> {
        if by.is_none() && wait.is_none() && interval.is_none() && max_size.is_none() {
            return None;
        }
        let mut good = true;
        let mut fields = Vec::new();
        for name in by.iter().flat_map(|by| by.get_ref()) {
            match DedupField::parse(name.get_ref()) {
                Ok(field) if fields.contains(&field) => {
                    self.error(
                        format!("group_by field `{field}` is listed twice"),
                        at(file, name.span()),
                    );
                    good = false;
                }
                Ok(field) => fields.push(field),
                Err(message) => {
                    // The dedup parser names its own key; group_by has the same fields.
                    let message = if name.get_ref().starts_with("metadata.") {
                        message
                    } else {
                        format!(
                            "unknown group_by field `{}`; expected one of {}",
                            name.get_ref(),
                            DedupField::NAMES
                        )
                    };
                    self.error(message, at(file, name.span()));
                    good = false;
                }
            }
        }
        let wait_value = match &wait {
            Some(w) => self.duration_in(w, file, "group_wait", Duration::ZERO..=MAX_GROUP_WAIT),
            None => Some(DEFAULT_GROUP_WAIT),
        };
        let interval_value = match &interval {
            Some(i) => self.duration_in(
                i,
                file,
                "group_interval",
                Duration::from_secs(1)..=MAX_GROUP_INTERVAL,
            ),
            None => Some(DEFAULT_GROUP_INTERVAL),
        };
        let max_size = match max_size {
            None => Some(DEFAULT_MAX_GROUP_SIZE),
            Some(n) => match u32::try_from(*n.get_ref()) {
                Ok(size) if (1..=MAX_MAX_GROUP_SIZE).contains(&size) => Some(size),
                _ => {
                    self.error(
                        format!(
                            "max_group_size `{}` is out of range: a digest lists between 1 and {MAX_MAX_GROUP_SIZE} events (it counts the rest)",
                            n.get_ref()
                        ),
                        at(file, n.span()),
                    );
                    None
                }
            },
        };
        if let (Some(wait_value), Some(interval_value)) = (wait_value, interval_value)
            && interval_value < wait_value
        {
            let fmt = |d| humantime::format_duration(d).to_string();
            // Point at the value written; a default is named as such. (The defaults
            // themselves are in order, so one of the two is always written.)
            let culprit = match (&interval, &wait) {
                (Some(i), Some(w)) => Some((
                    format!(
                        "group_interval `{}` is shorter than group_wait `{}`: make it at least {}",
                        i.get_ref(),
                        w.get_ref(),
                        fmt(wait_value)
                    ),
                    i.span(),
                )),
                (Some(i), None) => Some((
                    format!(
                        "group_interval `{}` is shorter than the default group_wait ({}): make it at least that, or set a shorter group_wait",
                        i.get_ref(),
                        fmt(wait_value)
                    ),
                    i.span(),
                )),
                (None, Some(w)) => Some((
                    format!(
                        "group_wait `{}` is longer than the default group_interval ({}): set group_interval to at least {}",
                        w.get_ref(),
                        fmt(interval_value),
                        fmt(wait_value)
                    ),
                    w.span(),
                )),
                (None, None) => None,
            };
            if let Some((message, span)) = culprit {
                self.error(message, at(file, span));
                good = false;
            }
        }
        match (wait_value, interval_value, max_size) {
            (Some(wait), Some(interval), Some(max_size)) if good => Some(Grouping {
                by: fields,
                wait,
                interval,
                max_size,
            }),
            _ => {
                *ok = false;
                None
            }
        }
    }

    /// A subscription's own `throttle`, refused on a grouped subscription.
    fn throttle(
        &mut self,
        text: &Spanned<String>,
        grouped: bool,
        file: usize,
        ok: &mut bool,
    ) -> Option<Throttle> {
        let parsed = Throttle::parse(text.get_ref());
        let message = match parsed {
            Err(message) => message,
            Ok(_) if grouped => "throttle does not apply to a grouped subscription: its group_interval already limits how often it sends; remove throttle, or the group_* keys".to_string(),
            Ok(throttle) => return Some(throttle),
        };
        self.error(message, at(file, text.span()));
        *ok = false;
        None
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
    use std::time::Duration;

    use herald_core::{DedupField, Grouping, Subscription, Throttle, ThrottleScope};

    use crate::load::testing::{BASE, Files, SUB, check};

    /// A subscription to `hook` with `tail` as its last lines (which start at line 21).
    fn sub(tail: &str) -> String {
        format!("\n[[teams.acme.subscriptions]]\nchannel = \"hook\"\nevents = [\"*\"]\n{tail}")
    }

    /// The subscriptions BASE followed by `extra` loads to (which must be valid).
    fn loaded(extra: &str) -> Vec<Subscription> {
        let files = Files::new(&[("herald.toml", &format!("{BASE}{extra}"))]);
        let outcome = files.load();
        let config = outcome
            .config
            .unwrap_or_else(|| panic!("{}", outcome.diagnostics.render_short()));
        config.matcher.subscriptions().to_vec()
    }

    #[test]
    fn unknown_key_in_a_subscription() {
        check(
            "\n[[teams.acme.subscriptions]]\nchannel = \"hook\"\nevents = [\"*\"]\nevent = \"host.down\"\n",
            "herald.toml:21:1: error: unknown field `event`, expected one of `name`, `channel`, `events`, `outcome`, `metadata`, `active`, `formatter`, `formatter_settings`, `dedup_window`, `dedup_key`, `group_by`, `group_wait`, `group_interval`, `max_group_size`, `throttle`",
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

    #[test]
    fn grouping_keys_turn_grouping_on_with_defaults_for_the_rest() {
        let all = loaded(&sub(
            "group_by = [\"event\", \"metadata.region\"]\ngroup_wait = \"10s\"\ngroup_interval = \"1m\"\nmax_group_size = 20\n",
        ));
        assert_eq!(
            all[0].group,
            Some(Grouping {
                by: vec![DedupField::Event, DedupField::Metadata("region".into())],
                wait: Duration::from_secs(10),
                interval: Duration::from_secs(60),
                max_size: 20,
            })
        );
        // Any one key is enough; an empty group_by is one group for the subscription.
        for tail in [
            "group_by = []\n",
            "group_wait = \"30s\"\n",
            "group_interval = \"5m\"\n",
            "max_group_size = 100\n",
        ] {
            let all = loaded(&sub(tail));
            assert_eq!(
                all[0].group,
                Some(Grouping {
                    by: vec![],
                    wait: Duration::from_secs(30),
                    interval: Duration::from_secs(300),
                    max_size: 100,
                }),
                "{tail}"
            );
        }
        assert_eq!(loaded(SUB)[0].group, None);
        // The bounds themselves are allowed.
        check(
            &sub("group_wait = \"0s\"\ngroup_interval = \"1s\"\nmax_group_size = 1\n"),
            "",
        );
        check(
            &sub("group_wait = \"24h\"\ngroup_interval = \"7d\"\nmax_group_size = 1000\n"),
            "",
        );
    }

    #[test]
    fn grouping_errors_point_at_the_value() {
        for (tail, want) in [
            (
                "group_wait = \"soon\"\n",
                "herald.toml:21:14: error: invalid group_wait `soon`: expected number at 0 (write e.g. \"5s\", \"30m\", \"2h\")",
            ),
            (
                "group_wait = \"25h\"\ngroup_interval = \"2d\"\n",
                "herald.toml:21:14: error: group_wait `25h` is out of range: write a group_wait between 0s and 1day",
            ),
            (
                "group_interval = \"0s\"\ngroup_wait = \"0s\"\n",
                "herald.toml:21:18: error: group_interval `0s` is out of range: write a group_interval between 1s and 7days",
            ),
            (
                "group_interval = \"8d\"\n",
                "herald.toml:21:18: error: group_interval `8d` is out of range: write a group_interval between 1s and 7days",
            ),
            (
                "group_interval = 300\n",
                "herald.toml:21:18: error: invalid type: integer `300`, expected a string",
            ),
            (
                "max_group_size = 0\n",
                "herald.toml:21:18: error: max_group_size `0` is out of range: a digest lists between 1 and 1000 events (it counts the rest)",
            ),
            (
                "max_group_size = 1001\n",
                "herald.toml:21:18: error: max_group_size `1001` is out of range: a digest lists between 1 and 1000 events (it counts the rest)",
            ),
            (
                "max_group_size = -5\n",
                "herald.toml:21:18: error: max_group_size `-5` is out of range: a digest lists between 1 and 1000 events (it counts the rest)",
            ),
            (
                "group_by = \"event\"\n",
                "herald.toml:21:12: error: invalid type: string \"event\", expected a sequence",
            ),
            (
                "group_by = [\"event\", \"region\", \"metadata.\", \"metadata.region\", \"event\", \"metadata.region\"]\n",
                "herald.toml:21:22: error: unknown group_by field `region`; expected one of event, outcome, resource.type, resource.id, actor.type, actor.id, metadata.KEY\n\
                 herald.toml:21:32: error: `metadata.` needs a key, as in `metadata.region`\n\
                 herald.toml:21:64: error: group_by field `event` is listed twice\n\
                 herald.toml:21:73: error: group_by field `metadata.region` is listed twice",
            ),
            (
                "group_wait = \"2m\"\ngroup_interval = \"1m\"\n",
                "herald.toml:22:18: error: group_interval `1m` is shorter than group_wait `2m`: make it at least 2m",
            ),
            (
                "group_wait = \"2m\"\ngroup_interval = \"1m\"\nmax_group_size = 0\n",
                "herald.toml:22:18: error: group_interval `1m` is shorter than group_wait `2m`: make it at least 2m\n\
                 herald.toml:23:18: error: max_group_size `0` is out of range: a digest lists between 1 and 1000 events (it counts the rest)",
            ),
            (
                "group_interval = \"10s\"\n",
                "herald.toml:21:18: error: group_interval `10s` is shorter than the default group_wait (30s): make it at least that, or set a shorter group_wait",
            ),
            (
                "group_wait = \"10m\"\n",
                "herald.toml:21:14: error: group_wait `10m` is longer than the default group_interval (5m): set group_interval to at least 10m",
            ),
        ] {
            check(&sub(tail), want);
        }
    }

    #[test]
    fn a_subscription_throttle() {
        let all = loaded(&sub("throttle = \"10/1m\"\n"));
        let throttle = Throttle {
            limit: 10,
            per: Duration::from_secs(60),
        };
        assert_eq!(
            all[0].throttle,
            Some((throttle, ThrottleScope::Subscription(all[0].key())))
        );
        assert_eq!(loaded(SUB)[0].throttle, None);
        // Malformed ones, with the core's own messages.
        for (text, want) in [
            (
                "10",
                "malformed throttle `10`; expected COUNT/DURATION, as in `10/1m`",
            ),
            (
                "ten/1m",
                "malformed throttle `ten/1m`: `ten` is not a whole number of messages",
            ),
            (
                "0/1m",
                "throttle `0/1m` allows no message at all; use a silence to mute a channel",
            ),
            (
                "10/soon",
                "malformed throttle `10/soon`: `soon` is not a duration (expected number at 0)",
            ),
            ("10/0s", "throttle `10/0s` has a zero period"),
            ("10/8d", "throttle `10/8d`: the period may be at most 7d"),
        ] {
            check(
                &sub(&format!("throttle = \"{text}\"\n")),
                &format!("herald.toml:21:12: error: {want}"),
            );
        }
        check(
            &sub("throttle = 10\n"),
            "herald.toml:21:12: error: invalid type: integer `10`, expected a string",
        );
    }

    #[test]
    fn throttle_and_grouping_exclude_each_other() {
        check(
            &sub("group_by = [\"event\"]\nthrottle = \"10/1m\"\n"),
            "herald.toml:22:12: error: throttle does not apply to a grouped subscription: its group_interval already limits how often it sends; remove throttle, or the group_* keys",
        );
        check(
            &sub("throttle = \"10/1m\"\nmax_group_size = 5\n"),
            "herald.toml:21:12: error: throttle does not apply to a grouped subscription: its group_interval already limits how often it sends; remove throttle, or the group_* keys",
        );
    }

    /// A channel's throttle counts the messages of its subscriptions that neither group
    /// nor set their own throttle, together (scope: the channel).
    #[test]
    fn a_channel_throttle_is_inherited_by_ungrouped_subscriptions() {
        let channel = "[teams.acme.channels.pager]\ntype = \"webhook\"\nurl = \"https://example.com/h\"\nthrottle = \"20/1h\"\n";
        let pager = |tail: &str| {
            format!("\n[[teams.acme.subscriptions]]\nchannel = \"pager\"\nevents = [\"*\"]\n{tail}")
        };
        let all = loaded(&format!(
            "{channel}{}{}{}{SUB}",
            pager(""),
            pager("throttle = \"5/1m\"\n"),
            pager("group_by = [\"event\"]\n"),
        ));
        let hourly = Throttle {
            limit: 20,
            per: Duration::from_secs(3600),
        };
        assert_eq!(
            all[0].throttle,
            Some((hourly, ThrottleScope::Channel("pager".into())))
        );
        assert_eq!(
            all[1].throttle,
            Some((
                Throttle {
                    limit: 5,
                    per: Duration::from_secs(60)
                },
                ThrottleScope::Subscription(all[1].key())
            ))
        );
        assert_eq!(all[2].throttle, None);
        assert!(all[2].group.is_some());
        // `hook` sets no throttle: its subscription has none.
        assert_eq!(all[3].throttle, None);

        let bad = |value: &str| {
            format!(
                "[teams.acme.channels.pager]\ntype = \"file\"\npath = \"p.jsonl\"\nthrottle = {value}\n{}{SUB}",
                pager("")
            )
        };
        check(
            &bad("\"20 per hour\""),
            "herald.toml:20:12: error: malformed throttle `20 per hour`; expected COUNT/DURATION, as in `10/1m`",
        );
        check(
            &bad("20"),
            "herald.toml:20:12: error: invalid type: integer `20`, expected a string",
        );
    }

    /// The full rendering `herald check` prints points at the value under its line.
    #[test]
    fn a_grouping_error_as_herald_check_shows_it() {
        let files = Files::new(&[(
            "herald.toml",
            &format!("{BASE}{}", sub("group_by = [\"event\", \"region\"]\n")),
        )]);
        let prefix = format!("{}/", files.dir.display());
        let rendered = files.load().diagnostics.render(false).replace(&prefix, "");
        insta::assert_snapshot!(rendered, @r#"
             × herald.toml:21:22: unknown group_by field `region`; expected one of event, outcome, resource.type, resource.id, actor.type, actor.id, metadata.KEY
               ╭─[herald.toml:21:22]
            20 │ events = ["*"]
            21 │ group_by = ["event", "region"]
               ·                      ────────
               ╰────
        "#);
    }
}
