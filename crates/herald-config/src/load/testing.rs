//! Test support for the loader's tests: a scratch directory of configuration files, a
//! fixed environment, the base configuration every case extends, and `check`, which
//! compares the short diagnostics exactly. Each section module's tests use it.

use std::path::PathBuf;

use super::{LoadOutcome, load_with_env};

/// A scratch directory with the given files; removed on drop.
pub(super) struct Files {
    pub(super) dir: PathBuf,
}

impl Files {
    pub(super) fn new(files: &[(&str, &str)]) -> Files {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir =
            std::env::temp_dir().join(format!("herald-config-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (name, text) in files {
            let path = dir.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        Files { dir }
    }

    pub(super) fn load(&self) -> LoadOutcome {
        load_with_env(&self.dir.join("herald.toml"), &test_env)
    }

    /// The short rendering, with the scratch directory removed from paths.
    pub(super) fn short(&self) -> String {
        let prefix = format!("{}/", self.dir.display());
        self.load().diagnostics.render_short().replace(&prefix, "")
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(super) fn test_env(name: &str) -> Option<String> {
    match name {
        "ACME_API_KEY" => Some("acme-key".into()),
        "GLOBEX_API_KEY" => Some("globex-key".into()),
        "HERALD_ADMIN_TOKEN" => Some("admin-token".into()),
        "TELEGRAM_BOT_TOKEN" => Some("123:abc".into()),
        "ACME_WEBHOOK_SECRET" => Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()),
        "EMPTY" => Some(String::new()),
        "HERALD_DATABASE_URL" => Some("postgres://herald:pw@db:5432/herald".into()),
        _ => None,
    }
}

pub(super) const BASE: &str = r#"[[event_types]]
name = "capsule.create"
[[event_types]]
name = "capsule.destroy"
[[event_types]]
name = "host.down"
[[event_types]]
name = "capsule.state.changed"
transient = true

[teams.acme]
api_keys = ["env:ACME_API_KEY"]

[teams.acme.channels.hook]
type = "file"
path = "out.jsonl"
"#;

/// Loads BASE followed by `extra` and checks the short diagnostics exactly. Lines of
/// `extra` start at line 17.
pub(super) fn check(extra: &str, expect: &str) {
    let files = Files::new(&[("herald.toml", &format!("{BASE}{extra}"))]);
    let got = files.short();
    assert_eq!(got.trim_end(), expect.trim_end(), "config tail:\n{extra}");
    assert_eq!(files.load().config.is_some(), !got.contains(": error: "));
}

pub(super) const SUB: &str =
    "\n[[teams.acme.subscriptions]]\nchannel = \"hook\"\nevents = [\"*\"]\n";
