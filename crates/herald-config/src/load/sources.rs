//! `[[sources]]`: where events come from besides `POST /v1/events` — a Redis stream read
//! by a consumer group (`type = "redis_stream"`) or a Redis Pub/Sub channel whose messages
//! go to the live stream only (`type = "redis_pubsub"`). Each entry is tagged by `type`
//! like a channel; the fixed `team` and the uniqueness of names are checked once every
//! team is known ([`Loader::source_configs`]).

use std::collections::BTreeMap;
use std::time::Duration;

use herald_core::{Secret, TeamId};
use toml::Spanned;
use toml::de::DeValue;

use super::{In, Loader, at, check_name};
use crate::diagnostic::{Diagnostic, Location};
use crate::model::*;
use crate::raw::{RawRedisPubSubSource, RawRedisStreamSource};

const SOURCE_KINDS: &str = "redis_stream, redis_pubsub";

/// One source as read, before the checks that need every team.
pub(super) struct SourceDraft {
    name: String,
    /// Where the name is written (or, without one, the `type`).
    at: Location,
    /// A fixed `team`, checked against the configured teams.
    team: Option<Spanned<String>>,
    file: usize,
    kind: SourceKind,
}

impl Loader<'_> {
    pub(super) fn sources(&mut self, value: Spanned<DeValue<'_>>, file: usize) {
        let span = value.span();
        let DeValue::Array(items) = value.into_inner() else {
            self.error(
                "`sources` must be an array of tables ([[sources]])",
                at(file, span),
            );
            return;
        };
        for item in items {
            let item_span = item.span();
            let kind = item
                .get_ref()
                .get("type")
                .map(|t| (t.get_ref().as_str().map(str::to_string), t.span()));
            let draft = match kind {
                None => {
                    self.error(
                        format!("a source has no `type`; expected one of {SOURCE_KINDS}"),
                        at(file, item_span),
                    );
                    None
                }
                Some((Some(kind), span)) => self.source(&kind, span, item, file),
                Some((None, span)) => {
                    self.error(
                        format!("`type` must be a string, one of {SOURCE_KINDS}"),
                        at(file, span),
                    );
                    None
                }
            };
            if let Some(draft) = draft {
                self.sections.sources.push(In { file, value: draft });
            }
        }
    }

    fn source(
        &mut self,
        kind: &str,
        kind_span: std::ops::Range<usize>,
        body: Spanned<DeValue<'_>>,
        file: usize,
    ) -> Option<SourceDraft> {
        match kind {
            "redis_stream" => {
                let raw: RawRedisStreamSource = self.de(body, file)?;
                let url = self.source_url(raw.url.as_ref(), &kind_span, file);
                let stream = self
                    .required(
                        raw.stream.as_ref(),
                        &kind_span,
                        file,
                        "stream",
                        "the stream to read",
                    )
                    .and_then(|s| self.redis_key(s, file, "stream"));
                let group = match &raw.group {
                    Some(g) => self.redis_key(g, file, "group"),
                    None => Some("herald".to_string()),
                };
                let consumer = match &raw.consumer {
                    Some(c) => self.redis_key(c, file, "consumer").map(Some),
                    None => Some(None),
                };
                let field = match &raw.field {
                    Some(f) => self.redis_key(f, file, "field"),
                    None => Some("payload".to_string()),
                };
                let team = self.team_choice(raw.team_from.as_ref(), raw.team.as_ref(), file);
                let claim_idle = match &raw.claim_idle {
                    Some(d) => self.duration_in(
                        d,
                        file,
                        "claim_idle",
                        Duration::from_secs(1)..=Duration::from_secs(86_400),
                    ),
                    None => Some(DEFAULT_CLAIM_IDLE),
                };
                let max_deliveries = match &raw.max_deliveries {
                    Some(n) if !(1..=1000).contains(n.get_ref()) => {
                        self.error(
                            "max_deliveries must be between 1 and 1000",
                            at(file, n.span()),
                        );
                        None
                    }
                    Some(n) => Some(*n.get_ref()),
                    None => Some(DEFAULT_MAX_DELIVERIES),
                };
                let stream = stream?;
                let (name, name_at) =
                    self.source_name(raw.name.as_ref(), &stream, file, kind_span)?;
                Some(SourceDraft {
                    name,
                    at: name_at,
                    team: raw.team.clone(),
                    file,
                    kind: SourceKind::RedisStream(RedisStreamConfig {
                        url: url?,
                        stream,
                        group: group?,
                        consumer: consumer?,
                        field: field?,
                        team: team?,
                        claim_idle: claim_idle?,
                        max_deliveries: max_deliveries?,
                    }),
                })
            }
            "redis_pubsub" => {
                let raw: RawRedisPubSubSource = self.de(body, file)?;
                let url = self.source_url(raw.url.as_ref(), &kind_span, file);
                let channel = self
                    .required(
                        raw.channel.as_ref(),
                        &kind_span,
                        file,
                        "channel",
                        "the Pub/Sub channel to subscribe to",
                    )
                    .and_then(|c| self.redis_key(c, file, "channel"));
                let team = self.team_choice(raw.team_from.as_ref(), raw.team.as_ref(), file);
                let channel = channel?;
                let (name, name_at) =
                    self.source_name(raw.name.as_ref(), &channel, file, kind_span)?;
                Some(SourceDraft {
                    name,
                    at: name_at,
                    team: raw.team.clone(),
                    file,
                    kind: SourceKind::RedisPubSub(RedisPubSubConfig {
                        url: url?,
                        channel,
                        team: team?,
                    }),
                })
            }
            other => {
                self.error(
                    format!("unknown source type `{other}`; expected one of {SOURCE_KINDS}"),
                    at(file, kind_span),
                );
                None
            }
        }
    }

    /// The source's required `url`, checked.
    fn source_url(
        &mut self,
        url: Option<&Spanned<String>>,
        kind_span: &std::ops::Range<usize>,
        file: usize,
    ) -> Option<Secret> {
        let url = self.required(url, kind_span, file, "url", "the Redis server")?;
        self.redis_url(url, file, "Redis url of the source")
    }

    /// A required key, or an error at the entry's `type`.
    fn required<'v>(
        &mut self,
        value: Option<&'v Spanned<String>>,
        kind_span: &std::ops::Range<usize>,
        file: usize,
        key: &str,
        what: &str,
    ) -> Option<&'v Spanned<String>> {
        if value.is_none() {
            self.error(
                format!("this source has no `{key}` ({what})"),
                at(file, kind_span.clone()),
            );
        }
        value
    }

    /// The source's name: `name`, else its stream or channel.
    fn source_name(
        &mut self,
        name: Option<&Spanned<String>>,
        default: &str,
        file: usize,
        kind_span: std::ops::Range<usize>,
    ) -> Option<(String, Location)> {
        match name {
            Some(n) => match check_name("source", n.get_ref()) {
                Ok(()) => Some((
                    n.get_ref().clone(),
                    Location {
                        file,
                        span: n.span(),
                    },
                )),
                Err(e) => {
                    self.error(e, at(file, n.span()));
                    None
                }
            },
            None => Some((
                default.to_string(),
                Location {
                    file,
                    span: kind_span,
                },
            )),
        }
    }

    /// `team_from = "payload"` (the default) or a fixed `team`, not both.
    fn team_choice(
        &mut self,
        team_from: Option<&Spanned<String>>,
        team: Option<&Spanned<String>>,
        file: usize,
    ) -> Option<SourceTeam> {
        match (team_from, team) {
            (Some(from), Some(_)) => {
                self.error(
                    "set either `team` (every event belongs to that team) or `team_from = \"payload\"` (each event's `team_id`), not both",
                    at(file, from.span()),
                );
                None
            }
            (Some(from), None) if from.get_ref() != "payload" => {
                self.error(
                    format!(
                        "team_from `{}` is not supported: write team_from = \"payload\" (each event's `team_id`) or a fixed `team`",
                        from.get_ref()
                    ),
                    at(file, from.span()),
                );
                None
            }
            (_, None) => Some(SourceTeam::Payload),
            (None, Some(team)) => match TeamId::parse(team.get_ref()) {
                Ok(id) => Some(SourceTeam::Fixed(id)),
                Err(e) => {
                    self.error(format!("team: {e}"), at(file, team.span()));
                    None
                }
            },
        }
    }

    /// A Redis key, group, consumer, field or channel name: non-empty, printable, at
    /// most 100 bytes (stream entry ids become event ids, which are bounded).
    fn redis_key(&mut self, value: &Spanned<String>, file: usize, what: &str) -> Option<String> {
        let v = value.get_ref();
        let problem = if v.is_empty() {
            Some("must not be empty".to_string())
        } else if v.len() > 100 {
            Some("is longer than 100 bytes".to_string())
        } else {
            v.chars()
                .find(|c| !c.is_ascii_graphic())
                .map(|c| format!("contains {c:?}; use printable ASCII without spaces"))
        };
        match problem {
            Some(p) => {
                self.error(format!("{what} {p}"), at(file, value.span()));
                None
            }
            None => Some(v.clone()),
        }
    }

    /// A Redis server address: `redis://…` or `unix://…`, literally or from `env:NAME`.
    /// The value may carry a password, so no message repeats it.
    pub(super) fn redis_url(
        &mut self,
        value: &Spanned<String>,
        file: usize,
        what: &str,
    ) -> Option<Secret> {
        let secret = self.secret(value, file, what)?;
        let problem = match url::Url::parse(secret.expose()) {
            Ok(url) => match url.scheme() {
                "redis" if url.host_str().is_some_and(|h| !h.is_empty()) => None,
                "redis" => Some("has no host".to_string()),
                "unix" | "redis+unix" => None,
                "rediss" => Some(
                    "uses TLS (rediss://), which this build does not support; use redis:// on a private network or a TLS tunnel".to_string(),
                ),
                other => Some(format!(
                    "must start with redis:// or unix://, not `{other}://`"
                )),
            },
            Err(e) => Some(format!("is not a URL ({e})")),
        };
        match problem {
            Some(p) => {
                self.diags.push(
                    Diagnostic::error(format!("the {what} {p}"), at(file, value.span())).with_help(
                        "write e.g. \"redis://127.0.0.1:6379\" or \"env:HERALD_REDIS_URL\"",
                    ),
                );
                None
            }
            None => Some(secret),
        }
    }

    /// Resolves each source's fixed team against the configured teams and checks that
    /// names are unique.
    pub(super) fn source_configs(
        &mut self,
        drafts: Vec<In<SourceDraft>>,
        teams: &BTreeMap<TeamId, crate::model::TeamConfig>,
    ) -> Vec<SourceConfig> {
        let mut out = Vec::new();
        let mut seen: BTreeMap<String, Location> = BTreeMap::new();
        for In { value: draft, .. } in drafts {
            if let Some(first) = seen.get(&draft.name) {
                let first = self
                    .diags
                    .locate(&Diagnostic::error("", Some(first.clone())));
                self.error(
                    format!(
                        "source `{}` is already declared at {first}; give each source a unique `name`",
                        draft.name
                    ),
                    Some(draft.at.clone()),
                );
                continue;
            }
            seen.insert(draft.name.clone(), draft.at.clone());
            if let Some(team) = &draft.team
                && let Ok(id) = TeamId::parse(team.get_ref())
                && !teams.contains_key(&id)
            {
                self.error(
                    format!("team `{id}` is not configured ([teams.{id}])"),
                    at(draft.file, team.span()),
                );
                continue;
            }
            out.push(SourceConfig {
                name: draft.name,
                kind: draft.kind,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{BASE, Files, SUB, check};
    use crate::model::{SourceKind, SourceTeam};

    const URL: &str = "url = \"redis://127.0.0.1:6379\"\n";

    /// Lines of the tail start at line 22 (BASE is 16 lines, SUB 4, then `[[sources]]`
    /// is line 21).
    fn source(lines: &str) -> String {
        format!("{SUB}[[sources]]\n{lines}")
    }

    #[test]
    fn problems_are_located() {
        let cases: &[(&str, &str)] = &[
            (
                "type = \"redis_stream\"\nurl = \"http://x\"\nstream = \"s\"\n",
                "herald.toml:23:7: error: the Redis url of the source must start with redis:// or unix://, not `http://`",
            ),
            (
                "type = \"redis_stream\"\nurl = \"redis//nope\"\nstream = \"s\"\n",
                "herald.toml:23:7: error: the Redis url of the source is not a URL (relative URL without a base)",
            ),
            (
                "type = \"redis_stream\"\nurl = \"rediss://h:6380\"\nstream = \"s\"\n",
                "herald.toml:23:7: error: the Redis url of the source uses TLS (rediss://), which this build does not support; use redis:// on a private network or a TLS tunnel",
            ),
            (
                "type = \"redis_stream\"\nurl = \"env:NOT_SET_ANYWHERE\"\nstream = \"s\"\n",
                "herald.toml:23:7: error: environment variable `NOT_SET_ANYWHERE` (the Redis url of the source) is not set",
            ),
            (
                "type = \"kafka\"\n",
                "herald.toml:22:8: error: unknown source type `kafka`; expected one of redis_stream, redis_pubsub",
            ),
            (
                "url = \"redis://h\"\n",
                "herald.toml:21:1: error: a source has no `type`; expected one of redis_stream, redis_pubsub",
            ),
            (
                &format!("type = \"redis_stream\"\n{URL}"),
                "herald.toml:22:8: error: this source has no `stream` (the stream to read)",
            ),
            (
                &format!(
                    "type = \"redis_stream\"\n{URL}stream = \"s\"\nteam = \"acme\"\nteam_from = \"payload\"\n"
                ),
                "herald.toml:26:13: error: set either `team` (every event belongs to that team) or `team_from = \"payload\"` (each event's `team_id`), not both",
            ),
            (
                &format!("type = \"redis_stream\"\n{URL}stream = \"s\"\nteam_from = \"header\"\n"),
                "herald.toml:25:13: error: team_from `header` is not supported: write team_from = \"payload\" (each event's `team_id`) or a fixed `team`",
            ),
            (
                &format!("type = \"redis_stream\"\n{URL}stream = \"s\"\nteam = \"initech\"\n"),
                "herald.toml:25:8: error: team `initech` is not configured ([teams.initech])",
            ),
            (
                &format!("type = \"redis_stream\"\n{URL}stream = \"s\"\nclaim_idle = \"soon\"\n"),
                "herald.toml:25:14: error: invalid claim_idle `soon`: expected number at 0 (write e.g. \"5s\", \"30m\", \"2h\")",
            ),
            (
                &format!("type = \"redis_stream\"\n{URL}stream = \"s\"\nmax_deliveries = 0\n"),
                "herald.toml:25:18: error: max_deliveries must be between 1 and 1000",
            ),
            (
                &format!("type = \"redis_stream\"\n{URL}stream = \"my stream\"\n"),
                "herald.toml:24:10: error: stream contains ' '; use printable ASCII without spaces",
            ),
            (
                &format!("type = \"redis_stream\"\n{URL}stream = \"s\"\ngroupe = \"g\"\n"),
                "herald.toml:25:1: error: unknown field `groupe`, expected one of `type`, `name`, `url`, `stream`, `group`, `consumer`, `field`, `team_from`, `team`, `claim_idle`, `max_deliveries`",
            ),
            (
                &format!("type = \"redis_pubsub\"\n{URL}"),
                "herald.toml:22:8: error: this source has no `channel` (the Pub/Sub channel to subscribe to)",
            ),
            (
                &format!("type = \"redis_pubsub\"\n{URL}channel = \"c\"\nname = \"a b\"\n"),
                "herald.toml:25:8: error: invalid source name `a b`: use 1–64 letters, digits, `_` and `-`",
            ),
        ];
        for (lines, want) in cases {
            check(&source(lines), want);
        }
    }

    #[test]
    fn source_names_are_unique() {
        check(
            &format!(
                "{SUB}[[sources]]\ntype = \"redis_stream\"\n{URL}stream = \"s\"\n[[sources]]\ntype = \"redis_pubsub\"\n{URL}channel = \"c\"\nname = \"s\"\n"
            ),
            "herald.toml:29:8: error: source `s` is already declared at herald.toml:22:8; give each source a unique `name`",
        );
    }

    #[test]
    fn defaults_and_values_are_read() {
        let files = Files::new(&[(
            "herald.toml",
            &format!(
                "{BASE}{SUB}[[sources]]\ntype = \"redis_stream\"\n{URL}stream = \"wrenn:events\"\n\
                 [[sources]]\nname = \"fixed\"\ntype = \"redis_stream\"\n{URL}stream = \"s2\"\ngroup = \"g\"\n\
                 consumer = \"c1\"\nfield = \"body\"\nteam = \"acme\"\nclaim_idle = \"5s\"\nmax_deliveries = 3\n\
                 [[sources]]\ntype = \"redis_pubsub\"\n{URL}channel = \"wrenn:live\"\n"
            ),
        )]);
        let config = files.load().config.expect("the configuration is valid");
        let names: Vec<&str> = config.sources.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["wrenn:events", "fixed", "wrenn:live"]);
        let SourceKind::RedisStream(first) = &config.sources[0].kind else {
            panic!("not a stream source");
        };
        assert_eq!(first.group, "herald");
        assert_eq!(first.consumer, None);
        assert_eq!(first.field, "payload");
        assert_eq!(first.team, SourceTeam::Payload);
        assert_eq!(first.claim_idle, crate::DEFAULT_CLAIM_IDLE);
        assert_eq!(first.max_deliveries, crate::DEFAULT_MAX_DELIVERIES);
        assert_eq!(first.dead_stream(), "wrenn:events:herald-dead");
        assert_eq!(first.url.expose(), "redis://127.0.0.1:6379");
        let SourceKind::RedisStream(second) = &config.sources[1].kind else {
            panic!("not a stream source");
        };
        assert_eq!(
            (
                second.group.as_str(),
                second.consumer.as_deref(),
                second.field.as_str()
            ),
            ("g", Some("c1"), "body")
        );
        assert_eq!(
            second.team,
            SourceTeam::Fixed(herald_core::TeamId::parse("acme").unwrap())
        );
        assert_eq!(second.claim_idle, std::time::Duration::from_secs(5));
        assert_eq!(second.max_deliveries, 3);
        assert!(
            matches!(&config.sources[2].kind, SourceKind::RedisPubSub(p) if p.channel == "wrenn:live")
        );
    }

    #[test]
    fn a_password_in_a_url_is_never_shown() {
        let files = Files::new(&[(
            "herald.toml",
            &format!(
                "{BASE}{SUB}[[sources]]\ntype = \"redis_stream\"\nurl = \"http://:hunter2@h\"\nstream = \"s\"\n"
            ),
        )]);
        let out = files.load().diagnostics.render(false);
        assert!(out.contains("must start with redis://"), "{out}");
        assert!(!out.contains("hunter2"), "{out}");
    }
}
