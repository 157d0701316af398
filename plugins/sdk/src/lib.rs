//! herald-plugin-sdk: write a herald formatter plugin in a few dozen lines.
//!
//! A plugin implements [`Formatter`] and calls [`register!`]; built with
//! `cargo build --target wasm32-wasip2 --release`, the crate becomes a WebAssembly
//! component of the `herald:formatter@0.1.0` world (`wit/formatter.wit` in herald's
//! repository) that herald loads with `[plugins.NAME] path = "…"`.
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
//! Everything a plugin needs arrives as arguments: there is no clock, network, filesystem
//! or environment inside herald's sandbox, and every render runs in a fresh instance.

extern crate self as herald_plugin_sdk;

pub mod escape;
pub mod json;
pub mod log;
mod settings;

pub use settings::Settings;

/// The generated `herald:formatter@0.1.0` bindings. Use the re-exports at the crate root.
#[doc(hidden)]
#[allow(unsafe_code)] // generated ABI glue: raw pointers into linear memory
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "__export_plugin",
        default_bindings_module: "herald_plugin_sdk::bindings",
        runtime_path: "herald_plugin_sdk::__private::wit_bindgen::rt",
    });
}

pub use bindings::herald::formatter::types::{
    Actor, ActorKind, Event, Format, Message, Outcome, PluginInfo, Rendered, Resource,
};
/// serde_json, for plugins that build JSON bodies (webhooks): `herald_plugin_sdk::serde_json::json!`.
pub use serde_json;

/// The version of the WIT package this SDK implements.
pub const WIT_VERSION: &str = "0.1.0";

/// A formatter: who it is, and how it renders one event for one channel kind.
pub trait Formatter {
    /// Called once when herald loads the plugin.
    fn info() -> PluginInfo;

    /// Renders `event` for a channel of kind `channel_kind` (`webhook`, `telegram`,
    /// `email`, `file`). Return [`skip`] to deliberately send nothing, or `Err` to let
    /// herald's built-in formatter render the event instead (the error is recorded).
    fn format(event: &Event, channel_kind: &str, settings: &Settings) -> Result<Rendered, String>;
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

impl ActorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::User => "user",
            ActorKind::ApiKey => "api_key",
            ActorKind::System => "system",
        }
    }
}

/// Exports a [`Formatter`] as the plugin's `herald:formatter/formatter` interface.
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
