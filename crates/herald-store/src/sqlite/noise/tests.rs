//! Property test of repeat suppression and silencing in the embedded store against a
//! reference model: for any sequence of batches, every delivery ends exactly one way —
//! to be sent, `suppressed` naming the sent delivery whose window it fell in, or
//! `silenced` naming its silence — and none disappears.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use herald_core::{Event, TeamId, Timestamp};
use proptest::prelude::*;

use crate::{Accepted, DedupClaim, DeliveryStatus, NewDelivery, SqliteStore, Store};

const WINDOW: i64 = 10;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_unix_nanos((1_767_225_600 + i128::from(secs)) * 1_000_000_000)
}

/// One published event: its dedup key, and whether a silence stops it.
#[derive(Debug, Clone)]
struct Step {
    key: &'static str,
    silenced: bool,
}

fn steps() -> impl Strategy<Value = Vec<(i64, Vec<Step>)>> {
    let step = (
        prop::sample::select(vec!["a", "b", "c"]),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(key, silenced)| Step { key, silenced });
    // Batches accepted at increasing times (gaps around the window's length).
    prop::collection::vec(
        (
            prop::sample::select(vec![0i64, 1, 3, 9, 10, 11]),
            prop::collection::vec(step, 1..4),
        ),
        1..12,
    )
}

/// What the model says of each delivery: `None` = sent, `Some(Ok(original))` = suppressed
/// as a repeat of `original`, `Some(Err(silence))` = silenced.
type Fate = Option<Result<String, String>>;

fn model(batches: &[(i64, Vec<Step>)]) -> Vec<(String, Fate)> {
    let mut open: HashMap<&str, (i64, String)> = HashMap::new();
    let mut out = Vec::new();
    let mut now = 0;
    let mut n = 0;
    for (gap, steps) in batches {
        now += gap;
        for step in steps {
            let id = format!("d{n}");
            n += 1;
            let fate = if step.silenced {
                Some(Err("sil_1".to_string()))
            } else {
                match open.get(step.key) {
                    Some((opened, original)) if now < opened + WINDOW => Some(Ok(original.clone())),
                    _ => {
                        open.insert(step.key, (now, id.clone()));
                        None
                    }
                }
            };
            out.push((id, fate));
        }
    }
    out
}

fn event(n: usize) -> Event {
    Event {
        id: format!("e{n}"),
        event: "capsule.create".into(),
        outcome: None,
        timestamp: at(0),
        team_id: TeamId::parse("acme").unwrap(),
        actor: None,
        resource: None,
        metadata: BTreeMap::new(),
        error: None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn every_delivery_ends_sent_suppressed_or_silenced_as_the_model_says(batches in steps()) {
        let expected = model(&batches);
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let got: Vec<(String, Fate)> = runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = SqliteStore::open(dir.path()).unwrap();
            let (mut now, mut n, mut suppressed_reported) = (0, 0, Vec::new());
            for (gap, steps) in &batches {
                now += gap;
                let batch: Vec<_> = steps.iter().map(|step| {
                    let delivery = NewDelivery {
                        id: format!("d{n}"),
                        channel: "hook".into(),
                        subscription: 0,
                        subscription_name: Some("s".into()),
                        held: false,
                        silence: step.silenced.then(|| "sil_1".to_string()),
                        dedup: (!step.silenced).then(|| DedupClaim {
                            key: step.key.into(),
                            window: Duration::from_secs(WINDOW as u64),
                        }),
                        fold: None,
                    };
                    let e = event(n);
                    n += 1;
                    (e, vec![delivery])
                }).collect();
                for accepted in store.accept(batch, at(now)).await.unwrap() {
                    match accepted {
                        Accepted::New { suppressed, .. } => suppressed_reported.extend(suppressed),
                        other => panic!("{other:?}"),
                    }
                }
            }
            let mut out = Vec::new();
            for i in 0..n {
                let id = format!("d{i}");
                let (d, attempts) = store.get_delivery(None, &id).await.unwrap().expect("no delivery disappears");
                assert!(attempts.is_empty());
                let fate = match d.status {
                    DeliveryStatus::Pending => None,
                    DeliveryStatus::Suppressed => {
                        assert!(suppressed_reported.contains(&id), "{id} suppressed but not reported");
                        Some(Ok(d.duplicate_of.clone().expect("a suppressed delivery names its original")))
                    }
                    DeliveryStatus::Silenced => Some(Err(d.silence_id.clone().expect("a silenced delivery names its silence"))),
                    other => panic!("{id} is {other}"),
                };
                out.push((id, fate));
            }
            let reported_once = suppressed_reported.len() == out.iter().filter(|(_, f)| matches!(f, Some(Ok(_)))).count();
            assert!(reported_once, "suppressed ids reported: {suppressed_reported:?}");
            out
        });
        prop_assert_eq!(got, expected);
    }
}
