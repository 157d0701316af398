//! The email channel: one notification, one `multipart/alternative` email (plain text and
//! HTML) sent over SMTP with lettre and rustls.
//!
//! Every email channel of a process shares one [`Mailer`] (the relay, TLS, credentials,
//! `From`, and a pool of open connections). An [`EmailChannel`] is a team, its recipients
//! and an optional subject prefix. [`render`] is the built-in rendering of an event and
//! [`render_digest`] that of a digest (one email for many events), both pure, which
//! `herald explain` shows.
//!
//! Each attempt of one delivery carries the same `Message-ID` (`<delivery-id@from-domain>`),
//! so a retried send is recognisable as the same notification.

mod compose;
mod config;
mod digest;
mod error;
mod pool;
mod render;
mod send;
mod tls;

#[cfg(test)]
mod tests;

use std::fmt;

use herald_core::TeamId;
use lettre::message::Mailbox;

use crate::{Channel, Outgoing, SendFuture};

pub use compose::message_id;
pub use config::{DEFAULT_TIMEOUT, Mailer, MailerOptions};
pub use digest::render_digest;
pub use error::ConfigError;
pub use render::{MAX_SUBJECT_CHARS, RenderedEmail, escape_html, html_to_text, render};
pub use tls::TlsMode;

/// The recipients of one team's email channel.
#[derive(Clone)]
pub struct EmailChannel {
    mailer: Mailer,
    team: TeamId,
    to: Vec<Mailbox>,
    cc: Vec<Mailbox>,
    subject_prefix: Option<String>,
}

impl fmt::Debug for EmailChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmailChannel")
            .field("team", &self.team)
            .field("to", &self.to())
            .field("cc", &self.cc())
            .field("subject_prefix", &self.subject_prefix)
            .field("mailer", &self.mailer)
            .finish()
    }
}

impl EmailChannel {
    /// Checks the addresses (`a@example.com` or `Name <a@example.com>`; at least one `to`)
    /// and the subject prefix (one line); touches no network.
    pub fn new(
        mailer: Mailer,
        team: TeamId,
        to: Vec<String>,
        cc: Vec<String>,
        subject_prefix: Option<String>,
    ) -> Result<EmailChannel, ConfigError> {
        if to.is_empty() {
            return Err(ConfigError::NoRecipients);
        }
        let to = to
            .iter()
            .map(|a| config::parse_mailbox("to", a))
            .collect::<Result<Vec<_>, _>>()?;
        let cc = cc
            .iter()
            .map(|a| config::parse_mailbox("cc", a))
            .collect::<Result<Vec<_>, _>>()?;
        let subject_prefix = match subject_prefix {
            Some(prefix) if prefix.chars().any(char::is_control) => {
                return Err(ConfigError::SubjectPrefix);
            }
            Some(prefix) if prefix.trim().is_empty() => None,
            Some(prefix) => Some(prefix.trim().to_string()),
            None => None,
        };
        Ok(EmailChannel {
            mailer,
            team,
            to,
            cc,
            subject_prefix,
        })
    }

    pub fn mailer(&self) -> &Mailer {
        &self.mailer
    }

    pub fn team(&self) -> &TeamId {
        &self.team
    }

    /// The `To` addresses as they appear in the header.
    pub fn to(&self) -> Vec<String> {
        self.to.iter().map(ToString::to_string).collect()
    }

    pub fn cc(&self) -> Vec<String> {
        self.cc.iter().map(ToString::to_string).collect()
    }

    pub fn subject_prefix(&self) -> Option<&str> {
        self.subject_prefix.as_deref()
    }

    /// The complete message (headers and MIME body, CRLF line ends) this channel would send
    /// for `msg`, dated `date`: for previews and tests.
    pub fn preview(
        &self,
        msg: &Outgoing<'_>,
        date: std::time::SystemTime,
    ) -> Result<Vec<u8>, String> {
        compose::compose(self, msg, date)
            .map(|message| message.formatted())
            .map_err(|e| e.to_string())
    }
}

impl Channel for EmailChannel {
    fn kind(&self) -> &'static str {
        "email"
    }

    fn send<'a>(&'a self, msg: &'a Outgoing<'a>) -> SendFuture<'a> {
        Box::pin(send::send(self, msg))
    }
}
