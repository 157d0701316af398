//! Test digests shared by the channels' tests.

use std::collections::BTreeMap;

use herald_core::{Digest, DigestKind, Event, Outcome, Resource, TeamId, Timestamp};

/// Event `i` of a digest: `capsule.create` failing on `sb_i` at 12:00:i, in region eu.
pub(crate) fn member(i: usize) -> Event {
    Event {
        id: format!("evt_{i}"),
        event: "capsule.create".into(),
        outcome: Some(Outcome::Error),
        timestamp: Timestamp::parse(&format!("2026-11-25T12:{:02}:{:02}Z", i / 60 % 60, i % 60))
            .unwrap(),
        team_id: TeamId::parse("acme").unwrap(),
        actor: None,
        resource: Some(Resource {
            id: format!("sb_{i}"),
            kind: "capsule".into(),
        }),
        metadata: BTreeMap::from([("region".to_string(), "eu".to_string())]),
        error: Some("out of memory\nat capsule::run".into()),
    }
}

/// A digest of the group `region = eu` listing `listed` events out of `total`.
pub(crate) fn digest(listed: usize, total: u64) -> Digest {
    Digest {
        id: "dlv_digest".into(),
        team: TeamId::parse("acme").unwrap(),
        subscription: "eu-failures".into(),
        channel: "oncall".into(),
        kind: DigestKind::Group {
            labels: vec![("metadata.region".into(), "eu".into())],
        },
        events: (0..listed).map(member).collect(),
        total,
        first_at: Timestamp::parse("2026-11-25T12:00:00.5Z").unwrap(),
        last_at: Timestamp::parse("2026-11-25T12:00:30Z").unwrap(),
    }
}
