//! `[teams.NAME]`: a team's API keys (secrets, each owned by one team), and the checks
//! that span a team's channels and subscriptions. Channels and subscriptions themselves
//! are read in `channels.rs` and `subscriptions.rs`.

use std::collections::BTreeMap;

use herald_core::{EventTypeRegistry, Secret, Subscription, TeamId};
use toml::Spanned;
use toml::de::DeValue;

use super::{In, Loader, TeamDraft, at};
use crate::diagnostic::{Diagnostic, Location};
use crate::model::{ChannelConfig, TeamConfig};
use crate::raw::RawSubscription;

const TEAM_KEYS: &str =
    "api_keys, channels, subscriptions, description, alerts, alert_dead_letters";

impl Loader<'_> {
    pub(super) fn teams(&mut self, value: Spanned<DeValue<'_>>, file: usize) {
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
                channel_throttles: BTreeMap::new(),
                subscriptions: Vec::new(),
                unreadable_subscriptions: 0,
                alerts: None,
                alert_dead_letters: None,
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
                    "alerts" => {
                        draft.alerts = self.de::<Spanned<String>>(value, file).map(|v| (v, file));
                    }
                    "alert_dead_letters" => {
                        draft.alert_dead_letters =
                            self.de::<Spanned<u64>>(value, file).map(|v| (v, file));
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

    pub(super) fn teams_and_subscriptions(
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
                channel_throttles,
                subscriptions: raw_subs,
                unreadable_subscriptions,
                alerts,
                alert_dead_letters,
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
            let mut names = std::collections::BTreeSet::new();
            for (index, In { file, value: raw }) in raw_subs.into_iter().enumerate() {
                if let Some(name) = &raw.name
                    && !names.insert(name.get_ref().clone())
                {
                    self.error(
                        format!(
                            "subscription name `{}` is used twice in team `{id}`: deliveries find their subscription by it",
                            name.get_ref()
                        ),
                        at(file, name.span()),
                    );
                    continue;
                }
                if let Some(u) = used.get_mut(raw.channel.get_ref().as_str()) {
                    *u = true;
                }
                if let Some(sub) = self.subscription(
                    &id,
                    index,
                    raw,
                    file,
                    &channels,
                    &channel_throttles,
                    registry,
                ) {
                    subscriptions.push(sub);
                }
            }
            // The alert channel must be one of the team's own; alerts alone are a use.
            let alerts =
                alerts.and_then(|(name, file)| match used.get_mut(name.get_ref().as_str()) {
                    Some(u) => {
                        *u = true;
                        Some(name.into_inner())
                    }
                    None => {
                        self.error(
                            format!(
                                "`alerts` names `{}`, which is not a channel of team `{id}`",
                                name.get_ref()
                            ),
                            at(file, name.span()),
                        );
                        None
                    }
                });
            let alert_dead_letters = match alert_dead_letters {
                Some((n, file)) if *n.get_ref() == 0 || alerts.is_none() => {
                    let message = if *n.get_ref() == 0 {
                        "`alert_dead_letters` must be at least 1".to_string()
                    } else {
                        format!(
                            "`alert_dead_letters` needs `alerts = \"CHANNEL\"` in team `{id}`: there is nowhere to send the alert"
                        )
                    };
                    self.error(message, at(file, n.span()));
                    None
                }
                other => other.map(|(n, _)| n.into_inner()),
            };
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
                    alerts,
                    alert_dead_letters,
                },
            );
        }
        (teams, subscriptions)
    }
}

#[cfg(test)]
mod tests {
    use crate::load::testing::{BASE, Files, SUB, check};

    #[test]
    fn unknown_key_in_a_team() {
        check(
            &format!("{SUB}[teams.acme.limits]\nrate = 1\n"),
            "herald.toml:21:13: error: unknown key `limits` in team `acme`; expected one of api_keys, channels, subscriptions, description, alerts, alert_dead_letters",
        );
    }

    #[test]
    fn the_same_api_key_in_two_teams() {
        check(
            &format!("{SUB}[teams.globex]\napi_keys = [\"env:ACME_API_KEY\"]\n"),
            "herald.toml:22:13: error: this API key is already used by team `acme` (at herald.toml:12:13); each key must belong to one team",
        );
    }

    #[test]
    fn the_same_api_key_across_included_files() {
        let files = Files::new(&[
            (
                "herald.toml",
                &format!("include = [\"teams/*.toml\"]\n{BASE}{SUB}"),
            ),
            (
                "teams/globex.toml",
                "[teams.globex]\napi_keys = [\"env:ACME_API_KEY\"]\n",
            ),
        ]);
        assert_eq!(
            files.short().trim_end(),
            "teams/globex.toml:2:13: error: this API key is already used by team `acme` (at herald.toml:13:13); each key must belong to one team"
        );
    }

    #[test]
    fn a_channel_nothing_subscribes_to_is_a_warning() {
        let files = Files::new(&[("herald.toml", BASE)]);
        assert_eq!(
            files.short().trim_end(),
            "herald.toml:14:22: warning: channel `hook` of team `acme` has no subscription: nothing will be sent to it"
        );
        assert!(
            files.load().config.is_some(),
            "a warning does not make the config invalid"
        );
    }

    #[test]
    fn the_alert_channel_is_one_of_the_teams_channels() {
        // An alert-only channel needs no subscription.
        let files = Files::new(&[(
            "herald.toml",
            &BASE.replace("[teams.acme]\n", "[teams.acme]\nalerts = \"hook\"\n"),
        )]);
        assert_eq!(files.short().trim_end(), "");
        assert_eq!(
            files
                .load()
                .config
                .unwrap()
                .teams
                .values()
                .next()
                .unwrap()
                .alerts
                .as_deref(),
            Some("hook")
        );
        let files = Files::new(&[(
            "herald.toml",
            &format!(
                "{}{SUB}",
                BASE.replace("[teams.acme]\n", "[teams.acme]\nalerts = \"pager\"\n")
            ),
        )]);
        assert_eq!(
            files.short().trim_end(),
            "herald.toml:12:10: error: `alerts` names `pager`, which is not a channel of team `acme`"
        );
        for (lines, want) in [
            ("alerts = \"hook\"\nalert_dead_letters = 100\n", ""),
            (
                "alerts = \"hook\"\nalert_dead_letters = 0\n",
                "herald.toml:13:22: error: `alert_dead_letters` must be at least 1",
            ),
            (
                "alert_dead_letters = 5\n",
                "herald.toml:12:22: error: `alert_dead_letters` needs `alerts = \"CHANNEL\"` in team `acme`: there is nowhere to send the alert",
            ),
        ] {
            let text = BASE.replace("[teams.acme]\n", &format!("[teams.acme]\n{lines}"));
            let files = Files::new(&[("herald.toml", &format!("{text}{SUB}"))]);
            assert_eq!(files.short().trim_end(), want, "{lines}");
        }
    }

    #[test]
    fn a_telegram_channel_needs_the_telegram_section() {
        check(
            "[teams.acme.channels.tg]\ntype = \"telegram\"\nchat_id = 1\n[[teams.acme.subscriptions]]\nchannel = \"tg\"\nevents = [\"*\"]\n[[teams.acme.subscriptions]]\nchannel = \"hook\"\nevents = [\"*\"]\n",
            "herald.toml:17:22: error: channel `tg` is a telegram channel, but there is no [telegram] section with a bot_token",
        );
    }
}
