//! Alertmanager as a side-by-side target: a generated configuration that sends every alert
//! at once (`group_wait: 0s`) and on its own (`group_by: ['...']`) to one webhook receiver
//! per endpoint, and the alerts herald-load POSTs to it, one per request.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;

use herald_loadgen::payload::TARGET_BYTES;
use herald_loadgen::receiver::{ALERT_ID_LABEL, SENT_AT_KEY};
use reqwest::Url;
use serde_json::json;

use super::process::{Target, launch, prepare};

/// Where Debian's `prometheus-alertmanager` package puts the binary.
pub const DEBIAN_BINARY: &str = "/usr/bin/prometheus-alertmanager";

/// The alert name of every benchmark alert.
const ALERT_NAME: &str = "bench_ping";

/// Alertmanager's configuration for a run: every alert is its own group (`'...'` groups
/// by all labels, and each alert has a unique `event_id`), notified without waiting; with
/// several endpoints, one child route per receiver, each with `continue: true`, so every
/// alert goes to all of them — as herald's subscriptions fan an event out to every channel.
/// Resolved notifications are off: a run ends long before `resolve_timeout` (5 m), and
/// they would only count as repeats.
pub fn config(endpoints: &[Url]) -> String {
    let mut yaml = String::from(
        "# written by herald-load side-by-side\n\
         route:\n  receiver: r1\n  group_by: ['...']\n  group_wait: 0s\n",
    );
    if endpoints.len() > 1 {
        yaml.push_str("  routes:\n");
        for n in 1..=endpoints.len() {
            let _ = write!(yaml, "    - receiver: r{n}\n      continue: true\n");
        }
    }
    yaml.push_str("receivers:\n");
    for (n, url) in endpoints.iter().enumerate() {
        let _ = write!(
            yaml,
            "  - name: r{}\n    webhook_configs:\n      - url: '{url}'\n        send_resolved: false\n",
            n + 1
        );
    }
    yaml
}

/// The body of `POST /api/v2/alerts` for one event: a single firing alert whose labels make
/// it unique, carrying its publish time, padded to about the size of a herald event.
pub fn alert_body(event_id: &str, sent_ns: u64) -> Vec<u8> {
    let mut alert = json!({
        "labels": {"alertname": ALERT_NAME, ALERT_ID_LABEL: event_id, "source": "herald-load"},
        "annotations": {SENT_AT_KEY: sent_ns.to_string(), "note": ""},
    });
    let unpadded = json!([alert]).to_string().len();
    if unpadded < TARGET_BYTES {
        alert["annotations"]["note"] = json!("x".repeat(TARGET_BYTES - unpadded));
    }
    json!([alert]).to_string().into_bytes()
}

/// `prometheus-alertmanager` on [`config`] in `dir` (its storage too), gossip off.
pub async fn start(binary: &Path, dir: &Path, endpoints: &[Url]) -> anyhow::Result<(Target, Url)> {
    let port = prepare(dir)?;
    let path = dir.join("alertmanager.yml");
    fs::write(&path, config(endpoints))?;
    let mut command = Command::new(binary);
    command
        .arg(format!("--config.file={}", path.display()))
        .arg(format!("--storage.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        // Empty disables the cluster (gossip) listener: a single node, nothing on the network.
        .arg("--cluster.listen-address=");
    launch("alertmanager", command, dir, port, "/-/ready").await
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_loadgen::receiver::carried_events;

    fn urls(n: u16) -> Vec<Url> {
        (1..=n)
            .map(|p| Url::parse(&format!("http://127.0.0.1:{}/", 19000 + p)).unwrap())
            .collect()
    }

    #[test]
    fn one_endpoint_is_the_root_receiver() {
        assert_eq!(
            config(&urls(1)),
            "# written by herald-load side-by-side\n\
             route:\n  receiver: r1\n  group_by: ['...']\n  group_wait: 0s\n\
             receivers:\n  - name: r1\n    webhook_configs:\n\
             \x20     - url: 'http://127.0.0.1:19001/'\n        send_resolved: false\n"
        );
    }

    #[test]
    fn several_endpoints_each_get_every_alert() {
        let yaml = config(&urls(3));
        assert!(yaml.contains(
            "  routes:\n    - receiver: r1\n      continue: true\n    - receiver: r2\n      \
             continue: true\n    - receiver: r3\n      continue: true\nreceivers:\n"
        ));
        assert_eq!(yaml.matches("webhook_configs").count(), 3);
        assert!(yaml.contains("url: 'http://127.0.0.1:19003/'"));
    }

    #[test]
    fn an_alert_comes_back_as_its_event_through_the_receiver() {
        let body = alert_body("run-7", 1_764_000_000_123_456_789);
        assert!(body.len().abs_diff(TARGET_BYTES) <= 1, "{}", body.len());
        let alerts: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(alerts.as_array().unwrap().len(), 1);
        // Alertmanager's webhook notification carries the alert's labels and annotations.
        let notification = json!({"version": "4", "status": "firing", "alerts": alerts});
        assert_eq!(
            carried_events(&notification),
            [(Some("run-7".to_string()), Some(1_764_000_000_123_456_789))]
        );
    }
}
