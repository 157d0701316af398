//! herald-plugin-sdk: write a herald formatter plugin in a few dozen lines.
//!
//! A plugin implements [`Formatter`] and calls [`register!`]; built with
//! `cargo build --target wasm32-wasip2 --release`, the crate becomes a WebAssembly
//! component of the `herald:formatter@0.2.0` world (`wit/formatter-0.2.0.wit` in
//! herald's repository) that herald loads with `[plugins.NAME] path = "…"`.
//!
//! ```ignore
//! use herald_plugin_sdk::{escape, Event, Format, Formatter, Message, PluginInfo, Rendered, Settings};
//!
//! struct Shout;
//!
//! impl Formatter for Shout {
//!     fn info() -> PluginInfo {
//!         PluginInfo::new("shout", env!("CARGO_PKG_VERSION"), &["telegram"])
//!     }
//!     fn format(event: &Event, _channel: &str, _settings: &Settings) -> Result<Rendered, String> {
//!         let body = format!("<b>{}</b>", escape::html(&event.headline().to_uppercase()));
//!         Ok(Message::new(Format::Html, body).into())
//!     }
//! }
//!
//! herald_plugin_sdk::register!(Shout);
//! ```
//!
//! Digests (one message for a group of events, or for the events beyond a throttle) are
//! rendered by herald unless the plugin implements [`Formatter::format_digest`]; its
//! default declines.
//!
//! Everything a plugin needs arrives as arguments: there is no clock, network, filesystem
//! or environment inside herald's sandbox, and every render runs in a fresh instance.

extern crate self as herald_plugin_sdk;

pub mod escape;
pub mod json;
pub mod log;
mod settings;

pub use settings::Settings;

/// The generated `herald:formatter@0.2.0` bindings. Use the re-exports at the crate root.
#[doc(hidden)]
#[allow(unsafe_code)] // generated ABI glue: raw pointers into linear memory
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit/formatter-0.2.0.wit",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "__export_plugin",
        default_bindings_module: "herald_plugin_sdk::bindings",
        runtime_path: "herald_plugin_sdk::__private::wit_bindgen::rt",
    });
}

pub use bindings::herald::formatter::types::{
    Actor, ActorKind, Digest, DigestKind, Event, Format, Message, Outcome, PluginInfo, Rendered,
    Resource, Throttle,
};
/// serde_json, for plugins that build JSON bodies (webhooks): `herald_plugin_sdk::serde_json::json!`.
pub use serde_json;

/// The version of the WIT package this SDK implements.
pub const WIT_VERSION: &str = "0.2.0";

/// A formatter: who it is, and how it renders one event for one channel kind.
pub trait Formatter {
    /// Called once when herald loads the plugin.
    fn info() -> PluginInfo;

    /// Renders `event` for a channel of kind `channel_kind` (`webhook`, `telegram`,
    /// `email`, `file`). Return [`skip`] to deliberately send nothing, or `Err` to let
    /// herald's built-in formatter render the event instead (the error is recorded).
    fn format(event: &Event, channel_kind: &str, settings: &Settings) -> Result<Rendered, String>;

    /// Renders `digest` (one message for many events) for a channel of kind
    /// `channel_kind`. `Ok(None)` declines: herald's built-in digest renders it, which
    /// is what this default does. `Err` is recorded and the built-in digest renders it.
    fn format_digest(
        digest: &Digest,
        channel_kind: &str,
        settings: &Settings,
    ) -> Result<Option<Message>, String> {
        let _ = (digest, channel_kind, settings);
        Ok(None)
    }
}

/// Deliberately send nothing for this event; the reason is recorded with the delivery.
pub fn skip(reason: impl Into<String>) -> Rendered {
    Rendered::Skip(reason.into())
}

impl PluginInfo {
    /// `channel_kinds` empty means every kind.
    pub fn new(name: &str, version: &str, channel_kinds: &[&str]) -> PluginInfo {
        PluginInfo {
            name: name.to_string(),
            version: version.to_string(),
            channel_kinds: channel_kinds.iter().map(|k| k.to_string()).collect(),
        }
    }
}

impl Message {
    pub fn new(format: Format, body: impl Into<String>) -> Message {
        Message {
            format,
            subject: None,
            body: body.into(),
            text_alternative: None,
        }
    }

    /// A JSON body (a webhook request body) from a `serde_json` value.
    pub fn json(value: &serde_json::Value) -> Message {
        Message::new(Format::Json, value.to_string())
    }

    /// A JSON body written with [`json::object`](crate::json::object) (the fast way).
    pub fn json_text(body: String) -> Message {
        Message::new(Format::Json, body)
    }

    /// The email subject: one line, at most 998 bytes.
    pub fn with_subject(mut self, subject: impl Into<String>) -> Message {
        self.subject = Some(subject.into());
        self
    }

    /// A plain-text version of the body, for email.
    pub fn with_text_alternative(mut self, text: impl Into<String>) -> Message {
        self.text_alternative = Some(text.into());
        self
    }
}

impl From<Message> for Rendered {
    fn from(message: Message) -> Rendered {
        Rendered::Message(message)
    }
}

impl Event {
    /// The value of metadata `key`, if present.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| self.metadata[i].1.as_str())
    }

    pub fn failed(&self) -> bool {
        matches!(self.outcome, Some(Outcome::Error))
    }

    pub fn succeeded(&self) -> bool {
        matches!(self.outcome, Some(Outcome::Success))
    }

    /// `capsule.create failed`, `capsule.create succeeded`, or the bare type (`host.down`).
    pub fn headline(&self) -> String {
        match self.outcome {
            Some(Outcome::Error) => format!("{} failed", self.event_type),
            Some(Outcome::Success) => format!("{} succeeded", self.event_type),
            None => self.event_type.clone(),
        }
    }

    /// Who did it, for people: the actor's name, else its id, else its kind.
    pub fn actor_label(&self) -> Option<String> {
        let actor = self.actor.as_ref()?;
        Some(match (&actor.name, &actor.id) {
            (Some(name), _) => name.clone(),
            (None, Some(id)) => id.clone(),
            (None, None) => actor.kind.as_str().to_string(),
        })
    }
}

impl Digest {
    /// How many events the digest stands for but does not list ("and N more").
    pub fn more(&self) -> u64 {
        self.total.saturating_sub(self.events.len() as u64)
    }

    /// A one-line summary: `12 × capsule.create (region = eu)` for a group (the event
    /// type when all listed events share it, else `events`), `7 events folded by
    /// throttle 10/1m` for a throttle.
    pub fn headline(&self) -> String {
        match &self.kind {
            DigestKind::Throttle(t) => format!(
                "{} event{} folded by throttle {}/{}",
                self.total,
                if self.total == 1 { "" } else { "s" },
                t.limit,
                per(t.per_seconds)
            ),
            DigestKind::Group(labels) => {
                let first = self.events.first().map(|e| e.event_type.as_str());
                let what = match first {
                    Some(t) if self.events.iter().all(|e| e.event_type == t) => t,
                    _ => "events",
                };
                let mut line = format!("{} × {what}", self.total);
                if !labels.is_empty() {
                    let labels: Vec<String> =
                        labels.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                    line.push_str(&format!(" ({})", labels.join(", ")));
                }
                line
            }
        }
    }
}

/// `1m`, `2h`, `90s`: a throttle's period in its largest whole unit.
fn per(seconds: u64) -> String {
    match seconds {
        0 => "0s".to_string(),
        s if s.is_multiple_of(86_400) => format!("{}d", s / 86_400),
        s if s.is_multiple_of(3_600) => format!("{}h", s / 3_600),
        s if s.is_multiple_of(60) => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

impl ActorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::User => "user",
            ActorKind::ApiKey => "api_key",
            ActorKind::System => "system",
        }
    }
}

/// Exports a [`Formatter`] as the plugin's `herald:formatter/formatter@0.2.0` interface.
///
/// Also routes Rust panics to herald's log (instead of a stderr herald does not
/// provide), so `herald plugin test` and the delivery log show the panic message.
#[macro_export]
macro_rules! register {
    ($formatter:ty) => {
        #[doc(hidden)]
        struct __HeraldPluginExport;

        impl $crate::bindings::exports::herald::formatter::formatter::Guest
            for __HeraldPluginExport
        {
            fn info() -> $crate::PluginInfo {
                $crate::__private::install_panic_hook();
                <$formatter as $crate::Formatter>::info()
            }

            fn format(
                event: $crate::Event,
                channel_kind: ::std::string::String,
                settings: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
            ) -> ::std::result::Result<$crate::Rendered, ::std::string::String> {
                $crate::__private::install_panic_hook();
                <$formatter as $crate::Formatter>::format(
                    &event,
                    &channel_kind,
                    &$crate::Settings::from(settings),
                )
            }

            fn format_digest(
                digest: $crate::Digest,
                channel_kind: ::std::string::String,
                settings: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
            ) -> ::std::result::Result<
                ::std::option::Option<$crate::Message>,
                ::std::string::String,
            > {
                $crate::__private::install_panic_hook();
                <$formatter as $crate::Formatter>::format_digest(
                    &digest,
                    &channel_kind,
                    &$crate::Settings::from(settings),
                )
            }
        }

        $crate::bindings::__export_plugin!(__HeraldPluginExport with_types_in $crate::bindings);
    };
}

#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;

    /// Sends panic messages to herald's log at error level (`panicked at …`).
    pub fn install_panic_hook() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            std::panic::set_hook(Box::new(|info| {
                // `info` reads "panicked at FILE:LINE:COL:\nMESSAGE".
                crate::log::error(&info.to_string().replace('\n', " "));
            }));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(event_type: &str) -> Event {
        Event {
            id: "evt_1".into(),
            event_type: event_type.into(),
            outcome: None,
            timestamp: "2026-11-25T17:30:00Z".into(),
            unix_seconds: 1_795_627_800,
            team_id: "acme".into(),
            actor: None,
            resource: None,
            metadata: Vec::new(),
            error_message: None,
        }
    }

    fn digest(kind: DigestKind, events: Vec<Event>, total: u64) -> Digest {
        Digest {
            id: "dlv_1".into(),
            team_id: "acme".into(),
            subscription: "s".into(),
            channel: "c".into(),
            kind,
            events,
            total,
            first_at: "2026-11-25T17:30:00Z".into(),
            first_unix_seconds: 1_795_627_800,
            last_at: "2026-11-25T17:30:00Z".into(),
            last_unix_seconds: 1_795_627_800,
        }
    }

    #[test]
    fn digest_headlines() {
        let labels = vec![("region".to_string(), "eu".to_string())];
        let one_type = digest(
            DigestKind::Group(labels),
            vec![event("a.b"), event("a.b")],
            12,
        );
        assert_eq!(one_type.headline(), "12 × a.b (region = eu)");
        assert_eq!(one_type.more(), 10);
        let mixed = digest(
            DigestKind::Group(Vec::new()),
            vec![event("a.b"), event("c.d")],
            2,
        );
        assert_eq!(mixed.headline(), "2 × events");
        assert_eq!(mixed.more(), 0);
        for (per_seconds, text) in [
            (60, "7 events folded by throttle 10/1m"),
            (90, "7 events folded by throttle 10/90s"),
            (7_200, "7 events folded by throttle 10/2h"),
            (86_400, "7 events folded by throttle 10/1d"),
        ] {
            let throttle = Throttle {
                limit: 10,
                per_seconds,
            };
            let d = digest(DigestKind::Throttle(throttle), Vec::new(), 7);
            assert_eq!(d.headline(), text);
        }
        let one = digest(
            DigestKind::Throttle(Throttle {
                limit: 1,
                per_seconds: 1,
            }),
            Vec::new(),
            1,
        );
        assert_eq!(one.headline(), "1 event folded by throttle 1/1s");
    }
}
