//! Data-driven tests of ingest planning: validation, tenancy and fan-out.

use super::*;

const CONFIG: &str = r#"
[server]
admin_token = "admin"
[[event_types]]
name = "capsule.create"
[[event_types]]
name = "host.down"
[[event_types]]
name = "ui.blip"
transient = true

[teams.acme]
api_keys = ["acme-key"]
[teams.acme.channels.a]
type = "file"
path = "a.jsonl"
[teams.acme.channels.b]
type = "file"
path = "b.jsonl"
[[teams.acme.subscriptions]]
channel = "a"
events = ["*"]
dedup_window = "10m"
dedup_key = ["event", "resource.id"]
[[teams.acme.subscriptions]]
channel = "a"
events = ["capsule.*"]
[[teams.acme.subscriptions]]
channel = "b"
events = ["host.down"]

[teams.globex]
api_keys = ["globex-key"]
[teams.globex.channels.g]
type = "file"
path = "g.jsonl"
[[teams.globex.subscriptions]]
channel = "g"
events = ["*"]
"#;

fn config() -> Config {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.toml");
    std::fs::write(&path, CONFIG).unwrap();
    let outcome = herald_config::load_with_env(&path, &|_| None);
    outcome
        .config
        .unwrap_or_else(|| panic!("{}", outcome.diagnostics))
}

/// Plans `body` for `caller`; renders the plan as `type team -> channels` per event, or
/// the error with its field.
fn check(caller: &Caller, body: &str) -> String {
    let now = Timestamp::parse("2026-11-25T00:00:00Z").unwrap();
    match plan(&config(), caller, body.as_bytes(), now, &[]) {
        Ok(plan) => plan
            .events
            .iter()
            .map(|(e, d)| match d {
                None => format!("{} {} -> live only", e.event, e.team_id),
                Some(d) => {
                    let chans: Vec<String> = d
                        .iter()
                        .map(|d| format!("{}#{}", d.channel, d.subscription))
                        .collect();
                    format!("{} {} -> [{}]", e.event, e.team_id, chans.join(", "))
                }
            })
            .collect::<Vec<_>>()
            .join("; "),
        Err(e) => format!("error {:?}: {e}", e.field()),
    }
}

#[test]
fn planning() {
    let acme = Caller::Team(TeamId::parse("acme").unwrap());
    let admin = Caller::Admin;
    let cases: &[(&Caller, &str, &str)] = &[
        (
            &acme,
            r#"{"event":"capsule.create"}"#,
            "capsule.create acme -> [a#0]",
        ),
        (
            &acme,
            r#"{"event":"host.down"}"#,
            "host.down acme -> [a#0, b#2]",
        ),
        (&acme, r#"{"event":"ui.blip"}"#, "ui.blip acme -> live only"),
        (
            &acme,
            r#"{"event":"host.down","team_id":"acme"}"#,
            "host.down acme -> [a#0, b#2]",
        ),
        (
            &acme,
            r#"{"event":"host.down","team_id":"globex"}"#,
            r#"error Some("team_id"): team_id: this API key belongs to team `acme` and cannot publish for team `globex`"#,
        ),
        (
            &acme,
            r#"{"event":"disk.full"}"#,
            r#"error Some("event"): event: event type `disk.full` is not declared in [[event_types]]"#,
        ),
        (
            &acme,
            r#"[{"event":"host.down"},{"event":"nope"}]"#,
            r#"error Some("[1].event"): [1].event: event type `nope` is not declared in [[event_types]]"#,
        ),
        (
            &acme,
            r#"[{"event":"host.down"},{"event":"x","actor":{"type":"bot"}}]"#,
            r#"error Some("[1].actor.type"): [1].actor.type: unknown variant `bot`, expected one of `user`, `api_key`, `system` at line 1 column 57"#,
        ),
        (
            &acme,
            r#"[{"event":"host.down"},{"event":"capsule.create","id":""}]"#,
            r#"error Some("[1].id"): [1].id: must not be empty"#,
        ),
        (
            &acme,
            "[]",
            r#"error Some("(body)"): (body): the batch is empty"#,
        ),
        (
            &acme,
            "{",
            "error None: malformed JSON at line 1 column 1: EOF while parsing an object",
        ),
        (
            &admin,
            r#"{"event":"host.down"}"#,
            r#"error Some("team_id"): team_id: missing: the admin token publishes for any team, so name it"#,
        ),
        (
            &admin,
            r#"{"event":"host.down","team_id":"globex"}"#,
            "host.down globex -> [g#0]",
        ),
        (
            &admin,
            r#"{"event":"host.down","team_id":"initech"}"#,
            r#"error Some("team_id"): team_id: team `initech` is not configured"#,
        ),
    ];
    for (caller, body, want) in cases {
        assert_eq!(check(caller, body), *want, "body {body}");
    }
}

#[test]
fn batches_are_bounded() {
    let acme = Caller::Team(TeamId::parse("acme").unwrap());
    let one = r#"{"event":"host.down"}"#;
    let body = format!("[{}]", vec![one; MAX_BATCH + 1].join(","));
    assert_eq!(
        check(&acme, &body),
        r#"error Some("(body)"): (body): the batch holds 1001 events; at most 1000 are allowed"#
    );
    let body = format!("[{}]", vec![one; MAX_BATCH].join(","));
    assert_eq!(
        check(&acme, &body).matches("host.down acme").count(),
        MAX_BATCH
    );
}

/// Noise control at planning: a silence in force marks its deliveries (and only those of
/// its team and channel); the others carry their subscription's dedup key for the store.
#[test]
fn silences_and_dedup_keys_are_planned_per_delivery() {
    let now = Timestamp::parse("2026-11-25T00:00:00Z").unwrap();
    let later = Timestamp::parse("2026-11-26T00:00:00Z").unwrap();
    let silence = |id: &str, team: &str, channel: &str, starts_at| Silence {
        id: id.into(),
        team: TeamId::parse(team).unwrap(),
        matchers: herald_core::SilenceMatchers {
            event: Some(herald_core::Pattern::parse("host.*").unwrap()),
            channel: Some(channel.into()),
            ..Default::default()
        },
        starts_at,
        ends_at: later,
        comment: String::new(),
        created_by: "test".into(),
        created_at: now,
    };
    let silences = [
        silence("sil_globex", "globex", "b", now),
        silence("sil_later", "acme", "a", later),
        silence("sil_b", "acme", "b", now),
    ];
    let acme = Caller::Team(TeamId::parse("acme").unwrap());
    let body = br#"{"event":"host.down","resource":{"type":"host","id":"h1"}}"#;
    let plan = plan(&config(), &acme, body, now, &silences).unwrap();
    let deliveries = plan.events[0].1.as_ref().unwrap();
    let got: Vec<String> = deliveries
        .iter()
        .map(|d| {
            format!(
                "{} silence={:?} dedup={:?}",
                d.channel,
                d.silence,
                d.dedup.as_ref().map(|c| (&c.key, c.window.as_secs()))
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            r#"a silence=None dedup=Some(("[\"host.down\",\"h1\"]", 600))"#,
            r#"b silence=Some("sil_b") dedup=None"#,
        ]
    );
}

/// Grouping and throttle at planning: a grouping subscription's deliveries claim their
/// group (key and labels from `group_by`), a throttled one its window; a silenced delivery
/// claims nothing. (Set on the model: the configuration keys are the config crate's.)
#[test]
fn fold_claims_are_planned_per_delivery() {
    let now = Timestamp::parse("2026-11-25T00:00:00Z").unwrap();
    let mut config = config();
    let mut subs = config.matcher.subscriptions().to_vec();
    // acme: `a` (first match for every event) groups by region, `b` is throttled by its
    // channel.
    subs[0].group = Some(herald_core::Grouping {
        by: vec![herald_core::DedupField::parse("metadata.region").unwrap()],
        wait: std::time::Duration::from_secs(2),
        interval: std::time::Duration::from_secs(10),
        max_size: 50,
    });
    subs[2].throttle = Some((
        herald_core::Throttle::parse("3/1m").unwrap(),
        herald_core::ThrottleScope::Channel("b".into()),
    ));
    config.matcher = herald_core::Matcher::new(config.matcher.registry().clone(), subs);
    let acme = Caller::Team(TeamId::parse("acme").unwrap());
    let body = br#"{"event":"host.down","metadata":{"region":"eu"}}"#;
    let describe = |silences: &[Silence]| -> Vec<String> {
        let plan = plan(&config, &acme, body, now, silences).unwrap();
        plan.events[0]
            .1
            .as_ref()
            .unwrap()
            .iter()
            .map(|d| match &d.fold {
                None => format!("{} no fold", d.channel),
                Some(FoldClaim::Group {
                    key,
                    kind,
                    wait,
                    interval,
                    digest_id,
                }) => {
                    assert!(digest_id.starts_with("dlv_") && *digest_id != d.id);
                    format!(
                        "{} group {key} {kind:?} wait={}s interval={}s",
                        d.channel,
                        wait.as_secs(),
                        interval.as_secs()
                    )
                }
                Some(FoldClaim::Throttle {
                    scope,
                    kind,
                    limit,
                    per,
                    digest_id,
                }) => {
                    assert!(digest_id.starts_with("dlv_") && *digest_id != d.id);
                    format!(
                        "{} throttle {scope} {kind:?} {limit}/{}s",
                        d.channel,
                        per.as_secs()
                    )
                }
            })
            .collect()
    };
    assert_eq!(
        describe(&[]),
        [
            r#"a group ["eu"] Group { labels: [("metadata.region", "eu")] } wait=2s interval=10s"#,
            "b throttle channel:b Throttle { limit: 3, per_seconds: 60 } 3/60s",
        ]
    );
    let silence = Silence {
        id: "sil_b".into(),
        team: TeamId::parse("acme").unwrap(),
        matchers: herald_core::SilenceMatchers {
            channel: Some("b".into()),
            ..Default::default()
        },
        starts_at: now,
        ends_at: Timestamp::parse("2026-11-26T00:00:00Z").unwrap(),
        comment: String::new(),
        created_by: "test".into(),
        created_at: now,
    };
    assert_eq!(
        describe(std::slice::from_ref(&silence)),
        [
            r#"a group ["eu"] Group { labels: [("metadata.region", "eu")] } wait=2s interval=10s"#,
            "b no fold",
        ]
    );
}
