//! herald's default Telegram message for a digest: one message standing for many events.
//!
//! A digest must stay readable in a chat, so it is one message, never split: the heading
//! (`Digest::headline`), the team and the first and last time, then one short line per
//! event for as many events as fit in [`MAX_MESSAGE_LEN`], then `… and N more` for the
//! rest (those the digest does not list and those that did not fit). Only a heading too
//! long for one message (labels near the envelope's limits) is split like any message.

use herald_core::{Digest, DigestKind, Event, Outcome, Timestamp};

use super::ParseMode;
use super::render::{MAX_MESSAGE_LEN, Style, Styled, split, write};

/// Longest error excerpt on an event's line, in characters.
const ERROR_EXCERPT: usize = 100;

/// herald's default Telegram message for `digest`, written for `mode`: one string per
/// message to send (one, unless the heading alone is longer than a message). Pure:
/// `herald explain` shows exactly what would be sent.
pub fn render_digest(digest: &Digest, mode: ParseMode) -> Vec<String> {
    split(&compose(digest))
        .iter()
        .map(|part| write(part, mode))
        .collect()
}

fn compose(digest: &Digest) -> Styled {
    let mut m = Styled::default();
    let marker = match digest.kind {
        DigestKind::Group { .. } => "DIGEST",
        DigestKind::Throttle { .. } => "THROTTLED",
    };
    m.push_styled(Style::Bold, marker);
    m.push(" ");
    m.push_styled(Style::Bold, &one_line(&digest.headline()));
    m.push("\nTeam: ");
    m.push(digest.team.as_str());
    m.push("\nFirst: ");
    m.push(&digest.first_at.to_string());
    m.push("\nLast: ");
    m.push(&digest.last_at.to_string());
    m.push("\n");
    if !digest.events.is_empty() {
        m.push("\n");
    }
    let mut shown: u64 = 0;
    for event in &digest.events {
        let line = event_line(event, digest.first_at);
        // Room for this line and, after it, the `… and N more` line at its longest.
        let rest = digest.total.saturating_sub(shown + 1);
        let more = if rest > 0 {
            more_line(digest.total).len()
        } else {
            0
        };
        if m.len() + line.len() + more > MAX_MESSAGE_LEN {
            break;
        }
        m.append(line);
        shown += 1;
    }
    let rest = digest.total.saturating_sub(shown);
    if rest > 0 {
        m.append(more_line(rest));
    }
    m.trim_end();
    m
}

/// `… and 12 more`, on its own line.
fn more_line(count: u64) -> Styled {
    let mut line = Styled::default();
    line.push_styled(Style::Italic, &format!("… and {count} more"));
    line.push("\n");
    line
}

/// `• 12:00:01 FAILED capsule.create sb_42: out of memory`: the time (with its date when
/// that differs from the digest's first), outcome, type, resource and the error's first
/// line, shortened.
fn event_line(event: &Event, first_at: Timestamp) -> Styled {
    let mut line = Styled::default();
    line.push("• ");
    line.push(&time_of(event.timestamp, first_at));
    line.push(" ");
    match event.outcome {
        Some(Outcome::Error) => {
            line.push_styled(Style::Bold, "FAILED");
            line.push(" ");
        }
        Some(Outcome::Success) => line.push("OK "),
        None => {}
    }
    line.push(&excerpt(&event.event, ERROR_EXCERPT));
    if let Some(resource) = &event.resource {
        line.push(" ");
        line.push_styled(Style::Code, &excerpt(&resource.id, ERROR_EXCERPT));
    }
    if let Some(error) = &event.error {
        let first = error.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        if !first.is_empty() {
            line.push(": ");
            line.push(&excerpt(first.trim(), ERROR_EXCERPT));
        }
    }
    line.push("\n");
    line
}

/// `HH:MM:SS` (and fraction) when `at` falls on `first_at`'s day, else the whole time.
fn time_of(at: Timestamp, first_at: Timestamp) -> String {
    let at = at.to_string();
    let first = first_at.to_string();
    match (at.split_once('T'), first.split_once('T')) {
        (Some((day, time)), Some((first_day, _))) if day == first_day => time.to_string(),
        _ => at,
    }
}

/// `text` with every control character (line breaks included) as a space, so that
/// nothing an event carries can start a line of its own.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// At most `max` characters, on one line, ending in `…` when cut.
fn excerpt(text: &str, max: usize) -> String {
    let line = one_line(text);
    if line.chars().count() <= max {
        return line;
    }
    let mut out: String = line.chars().take(max - 1).collect();
    out.push('…');
    out
}
