//! The built-in email rendering of a digest: one email standing for many events.
//!
//! Subject: `[acme] 12 × capsule.create error (region = eu)` (`Digest::headline`, with the
//! channel's `subject_prefix` in front). Body: the heading, a summary (team, how many
//! events and how many listed, first and last time), one entry per listed event (time,
//! type and outcome, resource, the error's first line) and `… and N more` for the rest.
//! Event content is escaped in the HTML and kept to one line in the text, as for a single
//! event.

use std::fmt::Write as _;

use herald_core::{Digest, Event, Outcome, TeamId};

use super::render::{
    RenderedEmail, escape_html, multi_line, one_line, subject, truncate, write_html_fields,
    write_text_fields,
};

/// Longest error excerpt in an event's entry, in characters.
const ERROR_EXCERPT: usize = 200;

/// Renders `digest` as the channel of `team` sends it when no formatter rendered it.
/// Pure: `herald explain` shows exactly what this returns.
pub fn render_digest(
    digest: &Digest,
    team: &TeamId,
    subject_prefix: Option<&str>,
) -> RenderedEmail {
    let headline = one_line(&digest.headline());
    let subject = subject(subject_prefix, &format!("[{team}] {headline}"));
    let mut fields = vec![("Team", team.to_string())];
    fields.push((
        "Events",
        if digest.more() > 0 {
            format!("{} ({} listed)", digest.total, digest.events.len())
        } else {
            digest.total.to_string()
        },
    ));
    fields.push(("First", digest.first_at.to_string()));
    fields.push(("Last", digest.last_at.to_string()));
    let entries: Vec<Entry> = digest.events.iter().map(Entry::of).collect();
    RenderedEmail {
        text: render_text(&headline, &fields, &entries, digest.more()),
        html: render_html(&subject, &headline, &fields, &entries, digest.more()),
        subject,
    }
}

/// One listed event, its values already on one line.
struct Entry {
    time: String,
    /// `capsule.create failed`.
    what: String,
    failed: bool,
    resource: Option<String>,
    error: Option<String>,
}

impl Entry {
    fn of(event: &Event) -> Entry {
        let mut what = one_line(&event.event);
        match event.outcome {
            Some(Outcome::Error) => what.push_str(" failed"),
            Some(Outcome::Success) => what.push_str(" succeeded"),
            None => {}
        }
        Entry {
            time: event.timestamp.to_string(),
            what,
            failed: event.outcome == Some(Outcome::Error),
            resource: event
                .resource
                .as_ref()
                .map(|r| one_line(&format!("{} {}", r.kind, r.id))),
            error: event.error.as_deref().and_then(|e| {
                let text = multi_line(e);
                let first = text.lines().map(str::trim).find(|l| !l.is_empty())?;
                Some(truncate(&one_line(first), ERROR_EXCERPT))
            }),
        }
    }
}

fn render_text(headline: &str, fields: &[(&str, String)], entries: &[Entry], more: u64) -> String {
    let mut out = String::new();
    out.push_str(headline);
    out.push_str("\n\n");
    write_text_fields(&mut out, fields);
    if !entries.is_empty() {
        out.push('\n');
    }
    for entry in entries {
        let _ = write!(out, "- {}  {}", entry.time, entry.what);
        if let Some(resource) = &entry.resource {
            let _ = write!(out, ": {resource}");
        }
        out.push('\n');
        if let Some(error) = &entry.error {
            let _ = writeln!(out, "    {error}");
        }
    }
    if more > 0 {
        let _ = writeln!(out, "… and {more} more");
    }
    out.push_str("\n-- \nSent by herald\n");
    out
}

fn render_html(
    subject: &str,
    headline: &str,
    fields: &[(&str, String)],
    entries: &[Entry],
    more: u64,
) -> String {
    let mut out = String::new();
    out.push_str("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">");
    let _ = writeln!(out, "<title>{}</title></head>", escape_html(subject));
    out.push_str(
        "<body style=\"font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; \
         color: #1f2328; font-size: 14px;\">\n",
    );
    let _ = writeln!(
        out,
        "<h2 style=\"font-size: 18px; border-left: 4px solid #57606a; padding-left: 8px;\">{}</h2>",
        escape_html(headline)
    );
    out.push_str("<table cellpadding=\"4\" style=\"border-collapse: collapse;\">\n");
    write_html_fields(&mut out, fields);
    out.push_str("</table>\n");
    if !entries.is_empty() {
        out.push_str(
            "<table cellpadding=\"4\" style=\"border-collapse: collapse; margin-top: 12px;\">\n\
             <tr><th align=\"left\">Time</th><th align=\"left\">Event</th>\
             <th align=\"left\">Resource</th><th align=\"left\">Error</th></tr>\n",
        );
        for entry in entries {
            let colour = if entry.failed { "#cf222e" } else { "#1f2328" };
            let _ = writeln!(
                out,
                "<tr style=\"border-top: 1px solid #d0d7de;\"><td style=\"white-space: nowrap;\">{}</td>\
                 <td style=\"color: {colour};\">{}</td><td>{}</td><td>{}</td></tr>",
                escape_html(&entry.time),
                escape_html(&entry.what),
                escape_html(entry.resource.as_deref().unwrap_or("")),
                escape_html(entry.error.as_deref().unwrap_or("")),
            );
        }
        out.push_str("</table>\n");
    }
    if more > 0 {
        let _ = writeln!(out, "<p>… and {more} more</p>");
    }
    out.push_str(
        "<p style=\"color: #57606a; font-size: 12px;\">Sent by herald</p>\n</body></html>\n",
    );
    out
}
