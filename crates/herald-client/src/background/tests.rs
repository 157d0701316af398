//! The pure parts of background mode: batch encoding under the byte limit, and what a
//! refusal means for the batch.

use super::*;

fn events(n: usize) -> Vec<RawEvent> {
    (0..n)
        .map(|i| RawEvent::builder("host.down").id(format!("e{i}")).build())
        .collect()
}

#[test]
fn encodes_a_json_array_within_the_byte_limit() {
    let all = events(5);
    let (body, taken) = encode(&all, usize::MAX);
    assert_eq!(taken, 5);
    let back: Vec<RawEvent> = serde_json::from_slice(&body).unwrap();
    assert_eq!(back, all);
    // One event is `{"id":"e0","event":"host.down"}` = 31 bytes; 3 fit in 100.
    let (body, taken) = encode(&all, 100);
    assert_eq!(taken, 3, "{}", String::from_utf8_lossy(&body));
    assert!(body.len() <= 100);
    assert_eq!(
        serde_json::from_slice::<Vec<RawEvent>>(&body).unwrap(),
        all[..3]
    );
    // An event larger than the limit still goes, alone (herald says what is wrong).
    let (_, taken) = encode(&all, 10);
    assert_eq!(taken, 1);
}

#[test]
fn a_refusal_names_what_to_drop_or_split() {
    let api = |status: u16, field: Option<&str>| Error::Api {
        status,
        code: "x".into(),
        message: "m".into(),
        field: field.map(str::to_string),
    };
    assert_eq!(refusal(&api(422, Some("[3].event")), 5), Refusal::Drop(3));
    assert_eq!(refusal(&api(422, Some("[7].event")), 5), Refusal::All);
    assert_eq!(refusal(&api(422, Some("metadata.k")), 5), Refusal::All);
    assert_eq!(refusal(&api(413, None), 5), Refusal::Split);
    assert_eq!(refusal(&api(413, None), 1), Refusal::All);
    assert_eq!(refusal(&api(401, None), 5), Refusal::All);
}
