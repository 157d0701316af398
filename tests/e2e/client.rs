//! The client commands of the binary (`herald send`) against a running server.

use serde_json::json;

use crate::harness::*;
use crate::support::text;

#[test]
fn send_publishes_an_event_and_reports_a_refusal() {
    let rx = Receiver::start("hook");
    let h = Herald::start(
        "client-send",
        &Conf::new()
            .webhook("acme", "hook", &rx)
            .subscribe("acme", "hook", &["*"]),
    );
    let out = h.cli(
        "send",
        ACME_KEY,
        &[
            "--type",
            "host.down",
            "--meta",
            "region=eu",
            "--id",
            "evt_cli_1",
        ],
        "",
    );
    assert!(out.status.success(), "{}", outputs(&out));
    let requests = rx.wait_for(1, WAIT);
    let body = requests[0].json();
    assert_eq!(body["id"], "evt_cli_1", "{body}");
    assert_eq!(body["event"], "host.down", "{body}");
    assert_eq!(body["team_id"], "acme", "{body}");
    assert_eq!(body["metadata"], json!({"region": "eu"}), "{body}");

    // A whole event from standard input.
    let event = json!({"id": "evt_cli_2", "event": "capsule.create", "outcome": "error"});
    let out = h.cli("send", ACME_KEY, &["--event", "-"], &event.to_string());
    assert!(out.status.success(), "{}", outputs(&out));
    let requests = rx.wait_for(2, WAIT);
    assert_eq!(requests[1].event_id(), "evt_cli_2");
    assert_eq!(requests[1].json()["outcome"], "error");

    // A bad key: a non-zero exit that passes on the server's message.
    let refusal = h
        .post(&json!({"event": "host.down"}), "not-a-key")
        .expect_error(401, "unauthorized");
    let message = refusal["message"].as_str().unwrap();
    let out = h.cli("send", "not-a-key", &["--type", "host.down"], "");
    assert!(!out.status.success(), "{}", outputs(&out));
    let printed = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        printed.contains(message),
        "want `{message}` in {}",
        outputs(&out)
    );

    // `--url` and `--key` default to $HERALD_URL and $HERALD_KEY.
    let mut cmd = crate::support::herald();
    cmd.env("HERALD_URL", h.url())
        .env("HERALD_KEY", ACME_KEY)
        .args(["send", "--type", "capsule.destroy", "--id", "evt_cli_3"]);
    let out = crate::support::run(cmd, "");
    assert!(out.status.success(), "{}", outputs(&out));
    let requests = rx.wait_for(3, WAIT);
    assert_eq!(requests[2].event_id(), "evt_cli_3");

    // Retrying what does not exist fails with the server's word for it.
    let out = h.cli("retry", ACME_KEY, &["dlv_nope"], "");
    assert!(!out.status.success(), "{}", outputs(&out));
    rx.assert_stays(3, QUIET);
}
