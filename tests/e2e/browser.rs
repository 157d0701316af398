//! The dashboard in headless Chromium, driven over WebDriver (chromedriver on 127.0.0.1):
//! sign in, see events appear live, see channel health, and retry a dead delivery by
//! clicking. Set `HERALD_DASHBOARD_PNG=PATH` to keep the final screenshot (docs/dashboard.png
//! is made that way).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::{ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

use crate::harness::*;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const MISSING: &str = "install chromium and chromium-driver: run scripts/setup";
/// A browser on a busy two-core machine is slower than an HTTP client.
const BROWSER_WAIT: Duration = Duration::from_secs(30);

/// A headless Chromium session through its own chromedriver; both end on drop.
struct Browser {
    client: Option<fantoccini::Client>,
    driver: Child,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser")
            .field("driver", &self.driver.id())
            .finish()
    }
}

impl Browser {
    /// Starts chromedriver on a free loopback port and a browser with a fresh profile in
    /// `dir`. Fails (never skips) when Chromium or its driver is not installed.
    fn start(dir: &Path) -> Browser {
        for path in [CHROMIUM, CHROMEDRIVER] {
            assert!(Path::new(path).exists(), "{path} not found: {MISSING}");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("find a free port")
            .port();
        let log = std::fs::File::create(dir.join("chromedriver.log")).expect("a log file");
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {CHROMEDRIVER}: {e}; {MISSING}"));
        let mut browser = Browser {
            client: None,
            driver,
        };
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        wait_until("chromedriver to answer", BROWSER_WAIT, || {
            let status = format!("{url}/status");
            block_on(async { http.get(&status).send().await?.error_for_status() })
                .map(|_| ())
                .map_err(|e| e.to_string())
        });

        let profile = dir.join("chromium-profile");
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--window-size=1280,860",
                    format!("--user-data-dir={}", profile.display()),
                ],
            }),
        );
        let client = block_on(
            ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities)
                .connect(&url),
        )
        .unwrap_or_else(|e| {
            let log = std::fs::read_to_string(dir.join("chromedriver.log")).unwrap_or_default();
            panic!("no Chromium session ({e}); chromedriver log:\n{log}")
        });
        browser.client = Some(client);
        browser
    }

    fn client(&self) -> &fantoccini::Client {
        self.client.as_ref().expect("a session")
    }

    fn goto(&self, url: &str) {
        block_on(self.client().goto(url)).unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    fn find(&self, css: &str) -> Result<Element, String> {
        block_on(self.client().find(Locator::Css(css))).map_err(|e| format!("{css}: {e}"))
    }

    /// Waits until `css` matches an element and returns it.
    fn wait_for(&self, what: &str, css: &str) -> Element {
        wait_until(what, BROWSER_WAIT, || self.find(css))
    }

    /// Waits until the text of `css` satisfies `ready`; returns the text.
    fn wait_text(&self, what: &str, css: &str, ready: impl Fn(&str) -> bool) -> String {
        wait_until(what, BROWSER_WAIT, || {
            let text = block_on(self.find(css)?.text()).map_err(|e| e.to_string())?;
            if ready(&text) {
                Ok(text)
            } else {
                Err(format!("{css}: {text:?}"))
            }
        })
    }

    /// Clicks `css`, finding it again when the page re-rendered it in between.
    fn click(&self, what: &str, css: &str) {
        wait_until(what, BROWSER_WAIT, || {
            block_on(self.find(css)?.click()).map_err(|e| format!("{css}: {e}"))
        });
    }

    fn screenshot(&self) -> Vec<u8> {
        block_on(self.client().screenshot()).expect("a screenshot")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            if std::thread::panicking() {
                let text = block_on(client.find(Locator::Css("body")))
                    .ok()
                    .and_then(|body| block_on(body.text()).ok());
                eprintln!(
                    "----- the page as text -----\n{}\n-----",
                    text.unwrap_or_default()
                );
            }
            // Closing the session ends the browser; then the driver.
            let _ = block_on(async {
                tokio::time::timeout(Duration::from_secs(10), client.close()).await
            });
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[test]
fn the_dashboard_shows_events_live_and_retries_a_dead_delivery_by_click() {
    let pager = Receiver::scripted("pager", [], Answer::status(500));
    let oncall = Receiver::scripted("oncall", [], Answer::status(500));
    let legacy = Receiver::scripted("legacy", [], Answer::status(410));
    let audit = Receiver::start("audit");
    let h = Herald::start(
        "browser-dashboard",
        // One retry, then dead.
        &Conf::new()
            .schedule(&["300ms"])
            .webhook("acme", "pager", &pager)
            .subscribe("acme", "pager", &["host.down"])
            .webhook("acme", "audit", &audit)
            .subscribe("acme", "audit", &["capsule.*"])
            .webhook("acme", "legacy", &legacy)
            .subscribe("acme", "legacy", &["capsule.destroy"])
            .webhook("globex", "oncall", &oncall)
            .subscribe("globex", "oncall", &["host.down"]),
    );
    let browser = Browser::start(h.dir());

    browser.goto(h.url());
    let token = browser.wait_for("the sign-in form", "#token");
    block_on(token.send_keys(ADMIN_TOKEN)).expect("type the token");
    browser.click("the sign-in button", "#login-button");
    browser.wait_text("the live feed to connect", "#status-line", |t| t == "live");

    // An event published over HTTP appears in the feed without a reload.
    let event = json!({"id": "evt_ui_create", "event": "capsule.create", "outcome": "error",
                       "metadata": {"region": "eu"}});
    h.post(&event, ACME_KEY).expect(202);
    let row = browser.wait_text(
        "the event in the live feed",
        r#"#feed tbody tr[data-event-id="evt_ui_create"]"#,
        |t| !t.is_empty(),
    );
    for part in ["acme", "capsule.create", "error", "durable"] {
        assert!(row.contains(part), "`{part}` in the feed row {row:?}");
    }
    h.post(
        &json!({"id": "evt_ui_blip", "event": "capsule.state.changed", "metadata": {"state": "running"}}),
        ACME_KEY,
    )
    .expect(202);
    let row = browser.wait_text(
        "the transient event in the live feed",
        r#"#feed tbody tr[data-event-id="evt_ui_blip"]"#,
        |t| !t.is_empty(),
    );
    assert!(row.contains("transient"), "{row:?}");

    // A delivery that goes dead, one that stays dead, and a channel disabled by a 410.
    h.post(
        &json!({"id": "evt_ui_down", "event": "host.down"}),
        ACME_KEY,
    )
    .expect(202);
    h.post(
        &json!({"id": "evt_ui_globex", "event": "host.down"}),
        GLOBEX_KEY,
    )
    .expect(202);
    h.post(
        &json!({"id": "evt_ui_destroy", "event": "capsule.destroy"}),
        ACME_KEY,
    )
    .expect(202);
    let dead = |event: &str| {
        let d = h.wait_deliveries(event, ADMIN_TOKEN, "dead", |d| {
            d.len() == 1 && d[0]["status"] == "dead"
        });
        d[0]["id"].as_str().unwrap().to_string()
    };
    let pager_delivery = dead("evt_ui_down");
    let oncall_delivery = dead("evt_ui_globex");
    let channel = browser.wait_text(
        "the disabled channel in the channels table",
        r#"#channels tbody tr[data-channel="acme/legacy"]"#,
        |t| t.contains("disabled"),
    );
    assert!(channel.contains("410"), "{channel:?}");
    for id in [&pager_delivery, &oncall_delivery] {
        browser.wait_for(
            "a dead delivery with a Retry button",
            &format!(
                r#"#deliveries tbody tr[data-delivery-id="{id}"][data-status="dead"] button.retry[data-id="{id}"]"#
            ),
        );
    }

    // The endpoint recovers; one click and the delivery succeeds.
    pager.set_default(Answer::status(200));
    browser.click(
        "the Retry button",
        &format!(r#"button.retry[data-id="{pager_delivery}"]"#),
    );
    let row = browser.wait_text(
        "the retried delivery to succeed",
        &format!(
            r#"#deliveries tbody tr[data-delivery-id="{pager_delivery}"][data-status="succeeded"]"#
        ),
        |t| !t.is_empty(),
    );
    assert!(
        row.contains("succeeded") && row.contains("pager"),
        "{row:?}"
    );
    let requests = pager.wait_for(3, WAIT);
    assert_eq!(requests[2].webhook_id(), pager_delivery);
    let (delivery, _) = h.wait_delivery(&pager_delivery, ACME_KEY, "succeeded", |d, _| {
        d["status"] == "succeeded"
    });
    assert_eq!(delivery["attempts"], 3, "{delivery}");
    // The other dead delivery is untouched.
    browser.wait_for(
        "the other dead delivery",
        &format!(
            r#"#deliveries tbody tr[data-delivery-id="{oncall_delivery}"][data-status="dead"]"#
        ),
    );

    let png = browser.screenshot();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "the screenshot is not a PNG"
    );
    if let Some(path) = std::env::var_os("HERALD_DASHBOARD_PNG") {
        std::fs::write(&path, &png).expect("write the screenshot");
    }
}

/// The Silences panel: a team key sees its own team's silences (not another team's) and
/// ends one with a click.
#[test]
fn the_dashboard_lists_the_teams_silences_and_expires_one_by_click() {
    let hook = Receiver::start("hook");
    let g = Receiver::start("g");
    let h = Herald::start(
        "browser-silences",
        &Conf::new()
            .webhook("acme", "hook", &hook)
            .subscribe("acme", "hook", &["*"])
            .webhook("globex", "g", &g)
            .subscribe("globex", "g", &["*"]),
    );
    let ends_at = herald_core::Timestamp::from_unix_nanos(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i128
            + 3_600_000_000_000,
    )
    .to_string();
    let create = |team: &str, channel: &str| {
        let body = json!({"team": team, "matchers": {"event": "host.down", "channel": channel},
                          "ends_at": ends_at, "comment": "rack move", "created_by": "ops"});
        h.client()
            .request(
                axum::http::Method::POST,
                "/v1/silences",
                Some(ADMIN_TOKEN),
                Some(("application/json", body.to_string().into_bytes())),
            )
            .expect(201)["silence"]["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let ours = create("acme", "hook");
    let theirs = create("globex", "g");
    let browser = Browser::start(h.dir());
    browser.goto(h.url());
    let token = browser.wait_for("the sign-in form", "#token");
    block_on(token.send_keys(ACME_KEY)).expect("type the token");
    browser.click("the sign-in button", "#login-button");
    let row = browser.wait_text(
        "the team's silence in the Silences panel",
        &format!(r#"#silences tbody tr[data-silence-id="{ours}"]"#),
        |t| !t.is_empty(),
    );
    for part in [
        "acme",
        "event host.down, channel hook",
        "active",
        "rack move — ops",
    ] {
        assert!(row.contains(part), "`{part}` in the silence row {row:?}");
    }
    assert!(
        browser
            .find(&format!(r#"tr[data-silence-id="{theirs}"]"#))
            .is_err(),
        "another team's silence is shown"
    );
    browser.click(
        "the Expire button",
        &format!(r#"#silences tbody tr[data-silence-id="{ours}"] button.expire"#),
    );
    wait_until(
        "the expired silence to leave the panel",
        BROWSER_WAIT,
        || match browser.find(&format!(r#"tr[data-silence-id="{ours}"]"#)) {
            Ok(_) => Err("still shown".to_string()),
            Err(_) => Ok(()),
        },
    );
    let silence = h.get(&format!("/v1/silences/{ours}"), ACME_KEY).expect(200);
    assert_eq!(silence["silence"]["state"], "expired");
    let untouched = h
        .get(&format!("/v1/silences/{theirs}"), ADMIN_TOKEN)
        .expect(200);
    assert_eq!(untouched["silence"]["state"], "active");
}
