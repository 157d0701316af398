//! One email for one attempt: the headers (From, To, Cc, Subject, Date, Message-ID,
//! Auto-Submitted) and the MIME body, from the built-in rendering or a formatter's output.
//!
//! Bodies:
//! - no formatter: `multipart/alternative` with the built-in text and HTML (of the
//!   digest, for a digest);
//! - a formatter's `html`: `multipart/alternative` with its `text_alternative` (or a text
//!   version of the HTML) and the HTML as given;
//! - a formatter's `text`, `markdown` or `json`: a single `text/plain` part.
//!
//! The subject is the formatter's when it set one, else the built-in one; the channel's
//! `subject_prefix` goes in front of either. lettre encodes non-ASCII header text as
//! RFC 2047 encoded words and bodies as quoted-printable or base64, so messages are
//! 7-bit clean and need no 8BITMIME or SMTPUTF8 from the relay.

use std::time::SystemTime;

use herald_core::Format;
use lettre::Message;
use lettre::message::header::{Header, HeaderName, HeaderValue};
use lettre::message::{MultiPart, SinglePart};

use super::render::{self, html_to_text, multi_line};
use super::{EmailChannel, digest};
use crate::Outgoing;

/// `Auto-Submitted: auto-generated` (RFC 3834): tells auto-responders not to answer.
#[derive(Debug, Clone, Copy)]
struct AutoSubmitted;

impl Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(AutoSubmitted)
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "auto-generated".to_string())
    }
}

enum Body {
    Alternative { text: String, html: String },
    Plain(String),
}

/// Builds the message for `msg`, dated `now`.
pub(super) fn compose(
    channel: &EmailChannel,
    msg: &Outgoing<'_>,
    now: SystemTime,
) -> Result<Message, lettre::error::Error> {
    let prefix = channel.subject_prefix.as_deref();
    // The built-in rendering: of the digest when the message is one, else of the event.
    let builtin = || match msg.digest {
        Some(digest) => digest::render_digest(digest, &channel.team, prefix),
        None => render::render(msg.event, &channel.team, prefix),
    };
    let (subject, body) = match msg.rendered {
        None => {
            let rendered = builtin();
            (
                rendered.subject,
                Body::Alternative {
                    text: rendered.text,
                    html: rendered.html,
                },
            )
        }
        Some(rendered) => {
            let subject = match &rendered.subject {
                Some(subject) => render::subject(prefix, subject),
                None => builtin().subject,
            };
            let body = match rendered.format {
                Format::Html => Body::Alternative {
                    text: match &rendered.text_alternative {
                        Some(text) => multi_line(text),
                        None => html_to_text(&rendered.body),
                    },
                    html: multi_line(&rendered.body),
                },
                Format::Text | Format::Markdown | Format::Json => {
                    Body::Plain(multi_line(&rendered.body))
                }
            };
            (subject, body)
        }
    };

    let mailer = &channel.mailer.inner;
    let mut builder = Message::builder()
        .from(mailer.from.clone())
        .subject(subject)
        .date(now)
        .message_id(Some(message_id(msg.delivery_id, &mailer.message_id_domain)))
        .header(AutoSubmitted);
    for to in &channel.to {
        builder = builder.to(to.clone());
    }
    for cc in &channel.cc {
        builder = builder.cc(cc.clone());
    }
    match body {
        Body::Alternative { text, html } => {
            builder.multipart(MultiPart::alternative_plain_html(text, html))
        }
        Body::Plain(text) => builder.singlepart(SinglePart::plain(text)),
    }
}

/// `<dlv_123@example.com>`: the same for every attempt of one delivery, so a receiver (or
/// a person) can tell a retried send from a new notification.
///
/// The delivery id is used as the left-hand side with every character outside
/// `A-Z a-z 0-9 _ -` written as `=XX` (its UTF-8 bytes in hex), which keeps the id a valid
/// `dot-atom-text` and distinct ids distinct.
pub fn message_id(delivery_id: &str, domain: &str) -> String {
    let mut local = String::with_capacity(delivery_id.len() + 8);
    for c in delivery_id.chars() {
        if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
            local.push(c);
        } else {
            let mut buf = [0; 4];
            for byte in c.encode_utf8(&mut buf).bytes() {
                local.push_str(&format!("={byte:02X}"));
            }
        }
    }
    if local.is_empty() {
        local.push_str("=00");
    }
    format!("<{local}@{domain}>")
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn message_ids_are_valid_and_distinct() {
        assert_eq!(
            message_id("dlv_01JXYZ", "example.com"),
            "<dlv_01JXYZ@example.com>"
        );
        assert_eq!(message_id("a.b c", "herald"), "<a=2Eb=20c@herald>");
        assert_eq!(message_id("a>\r\nb", "herald"), "<a=3E=0D=0Ab@herald>");
        assert_eq!(message_id("é", "herald"), "<=C3=A9@herald>");
        assert_ne!(message_id("a=2E", "h"), message_id("a.", "h"));
        assert_eq!(message_id("", "h"), "<=00@h>");
    }
}
