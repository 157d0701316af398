//! The rendered-message model: what a formatter (built-in or WASM plugin) makes of an
//! event and what a channel sends. Pure data, no IO.
//!
//! It lives in the core so that the plugin host and the channels are siblings that share
//! one model rather than one depending on the other. Another shape of message (a grouped
//! digest, say) belongs here next to [`Rendered`].

use serde::{Deserialize, Serialize};

/// The format of a formatter's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Text,
    Markdown,
    Html,
    Json,
}

/// A formatter's output for one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rendered {
    pub format: Format,
    pub subject: Option<String>,
    pub body: String,
    /// A plain-text version of `body` for channels that can carry both (email).
    pub text_alternative: Option<String>,
}
