//! The built-in email rendering of an event (subject, plain text, HTML) and the text
//! hygiene every email header and body goes through.
//!
//! Pure: no IO, no clock. `herald explain` shows exactly what [`render`] returns.
//!
//! Event content is untrusted (publishers choose it): in headers every control character
//! (CR and LF included) becomes a space, so no event can add a header line; in HTML every
//! character of it is escaped, so no event can add markup.

use std::fmt::Write as _;

use herald_core::{ActorType, Event, Outcome, TeamId};

/// Longest subject herald writes, in characters; longer ones end in `…`.
pub const MAX_SUBJECT_CHARS: usize = 200;

/// An event rendered for email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedEmail {
    /// One line, no control characters, at most [`MAX_SUBJECT_CHARS`] characters.
    pub subject: String,
    pub text: String,
    /// A complete HTML document in which all event content is escaped.
    pub html: String,
}

/// Renders `event` as the channel of `team` sends it when no formatter is configured.
///
/// Subject: `[acme] capsule.create failed: sb_42` — the team, the event type, `failed` or
/// `succeeded` from the outcome (nothing for state events), the resource id — with
/// `subject_prefix` and a space in front when given.
pub fn render(event: &Event, team: &TeamId, subject_prefix: Option<&str>) -> RenderedEmail {
    let headline = headline(event);
    let subject = subject(subject_prefix, &format!("[{team}] {headline}"));
    let fields = fields(event, team);
    RenderedEmail {
        text: render_text(event, &headline, &fields),
        html: render_html(event, &subject, &headline, &fields),
        subject,
    }
}

/// `capsule.create failed: sb_42`.
fn headline(event: &Event) -> String {
    let mut line = event.event.clone();
    match event.outcome {
        Some(Outcome::Error) => line.push_str(" failed"),
        Some(Outcome::Success) => line.push_str(" succeeded"),
        None => {}
    }
    if let Some(resource) = &event.resource {
        let _ = write!(line, ": {}", resource.id);
    }
    line
}

/// The final subject line: the prefix (if any) and `subject`, made safe for a header.
pub(crate) fn subject(prefix: Option<&str>, subject: &str) -> String {
    let joined = match prefix.map(str::trim).filter(|p| !p.is_empty()) {
        Some(prefix) => format!("{prefix} {subject}"),
        None => subject.to_string(),
    };
    truncate(&one_line(&joined), MAX_SUBJECT_CHARS)
}

/// Label and value of each summary line, values already on one line.
fn fields(event: &Event, team: &TeamId) -> Vec<(&'static str, String)> {
    let mut fields = vec![
        ("Team", team.to_string()),
        ("Event", one_line(&event.event)),
    ];
    if let Some(outcome) = event.outcome {
        fields.push(("Outcome", outcome.as_str().to_string()));
    }
    if let Some(resource) = &event.resource {
        fields.push((
            "Resource",
            one_line(&format!("{} {}", resource.kind, resource.id)),
        ));
    }
    if let Some(actor) = &event.actor {
        let kind = match actor.kind {
            ActorType::User => "user",
            ActorType::ApiKey => "api_key",
            ActorType::System => "system",
        };
        let mut value = kind.to_string();
        if let Some(id) = &actor.id {
            value.push(' ');
            value.push_str(id);
        }
        if let Some(name) = &actor.name {
            let _ = write!(value, " ({name})");
        }
        fields.push(("Actor", one_line(&value)));
    }
    fields.push(("Time", event.timestamp.to_string()));
    fields.push(("Event id", one_line(&event.id)));
    fields
}

/// The labelled fields of a plain-text email, values aligned in one column.
pub(super) fn write_text_fields(out: &mut String, fields: &[(&str, String)]) {
    let width = fields
        .iter()
        .map(|(label, _)| label.len())
        .max()
        .unwrap_or(0);
    for (label, value) in fields {
        let _ = writeln!(out, "{label:<width$}  {value}");
    }
}

/// The labelled fields of an HTML email as table rows (the caller opens and closes the
/// table).
pub(super) fn write_html_fields(out: &mut String, fields: &[(&str, String)]) {
    for (label, value) in fields {
        let _ = writeln!(
            out,
            "<tr><th align=\"left\" style=\"color: #57606a; font-weight: normal;\">{}</th>\
             <td>{}</td></tr>",
            escape_html(label),
            escape_html(value)
        );
    }
}

fn render_text(event: &Event, headline: &str, fields: &[(&str, String)]) -> String {
    let mut out = String::new();
    out.push_str(&one_line(headline));
    out.push_str("\n\n");
    write_text_fields(&mut out, fields);
    if let Some(error) = &event.error {
        out.push_str("\nError:\n");
        out.push_str(&indent(&multi_line(error)));
    }
    if !event.metadata.is_empty() {
        out.push_str("\nMetadata:\n");
        for (key, value) in &event.metadata {
            let value = multi_line(value);
            let _ = write!(out, "  {}: ", one_line(key));
            let mut lines = value.lines();
            out.push_str(lines.next().unwrap_or(""));
            out.push('\n');
            for line in lines {
                let _ = writeln!(out, "    {line}");
            }
        }
    }
    out.push_str("\n-- \nSent by herald\n");
    out
}

fn render_html(event: &Event, subject: &str, headline: &str, fields: &[(&str, String)]) -> String {
    let (badge, colour) = match event.outcome {
        Some(Outcome::Error) => ("failed", "#cf222e"),
        Some(Outcome::Success) => ("succeeded", "#1a7f37"),
        None => ("", "#57606a"),
    };
    let mut out = String::new();
    out.push_str("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">");
    let _ = writeln!(out, "<title>{}</title></head>", escape_html(subject));
    out.push_str(
        "<body style=\"font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; \
         color: #1f2328; font-size: 14px;\">\n",
    );
    let _ = write!(
        out,
        "<h2 style=\"font-size: 18px; border-left: 4px solid {colour}; padding-left: 8px;\">{}",
        escape_html(&one_line(headline))
    );
    if !badge.is_empty() {
        // The headline already says it in words; the colour is decoration only.
        let _ = write!(out, "<span style=\"color: {colour};\"> &#9679;</span>");
    }
    out.push_str("</h2>\n<table cellpadding=\"4\" style=\"border-collapse: collapse;\">\n");
    write_html_fields(&mut out, fields);
    out.push_str("</table>\n");
    if let Some(error) = &event.error {
        let _ = writeln!(
            out,
            "<h3 style=\"font-size: 15px;\">Error</h3>\n<pre style=\"white-space: pre-wrap; \
             background: #f6f8fa; padding: 8px;\">{}</pre>",
            escape_html(&multi_line(error))
        );
    }
    if !event.metadata.is_empty() {
        out.push_str(
            "<h3 style=\"font-size: 15px;\">Metadata</h3>\n\
             <table cellpadding=\"4\" style=\"border-collapse: collapse;\">\n",
        );
        for (key, value) in &event.metadata {
            let _ = writeln!(
                out,
                "<tr><th align=\"left\" style=\"font-weight: normal;\"><code>{}</code></th>\
                 <td style=\"white-space: pre-wrap;\">{}</td></tr>",
                escape_html(&one_line(key)),
                escape_html(&multi_line(value))
            );
        }
        out.push_str("</table>\n");
    }
    out.push_str(
        "<p style=\"color: #57606a; font-size: 12px;\">Sent by herald</p>\n</body></html>\n",
    );
    out
}

/// Escapes `& < > " '` so `s` is inert as HTML text and inside quoted attributes.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Characters that must not reach a single-line header or field: C0 and C1 controls, DEL,
/// and the Unicode line and paragraph separators.
fn breaks_lines(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

/// `s` on one line: every control character (CR, LF and tab included) becomes a space,
/// runs of whitespace collapse to one, and the ends are trimmed.
pub(crate) fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut space = false;
    for c in s.chars() {
        if breaks_lines(c) || c.is_whitespace() {
            space = true;
        } else {
            if space && !out.is_empty() {
                out.push(' ');
            }
            space = false;
            out.push(c);
        }
    }
    out
}

/// `s` with `\n` line ends (CRLF and lone CR converted) and no other control characters
/// except tab; for multi-line bodies.
pub(crate) fn multi_line(s: &str) -> String {
    let normalised = s.replace("\r\n", "\n").replace('\r', "\n");
    normalised
        .chars()
        .map(|c| {
            if c == '\n' || c == '\t' || !breaks_lines(c) {
                c
            } else {
                ' '
            }
        })
        .collect::<String>()
        .trim_end()
        .to_string()
}

fn indent(s: &str) -> String {
    let mut out = String::new();
    for line in s.lines() {
        let _ = writeln!(out, "  {line}");
    }
    out
}

/// At most `max` characters, the last one `…` when cut.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.truncate(out.trim_end().len());
    out.push('…');
    out
}

/// A plain-text version of a formatter's HTML, for the `text/plain` alternative when the
/// formatter gave none: tags dropped (and `script`/`style` content with them), block ends
/// and `<br>` as line breaks, the common entities decoded. A readable fallback, not a
/// faithful HTML renderer.
pub fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(lt) = rest.find('<') {
        out.push_str(&decode_entities(&rest[..lt]));
        let after = &rest[lt + 1..];
        let Some(gt) = after.find('>') else {
            // A lone `<`: keep it as text.
            out.push('<');
            rest = after;
            continue;
        };
        let tag = after[..gt].trim();
        rest = &after[gt + 1..];
        let closing = tag.starts_with('/');
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        if !closing && (name == "script" || name == "style") {
            // Skip to the matching end tag (or the end of the document).
            let end = format!("</{name}");
            rest = match rest.to_ascii_lowercase().find(&end) {
                Some(at) => rest[at..].find('>').map_or("", |gt| &rest[at + gt + 1..]),
                None => "",
            };
            continue;
        }
        match name.as_str() {
            "br" => out.push('\n'),
            "p" | "div" | "tr" | "li" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "pre"
            | "table" | "blockquote" | "ul" | "ol"
                if !out.ends_with('\n') && !out.is_empty() =>
            {
                out.push('\n');
            }
            "td" | "th" if !closing && !out.is_empty() && !out.ends_with(char::is_whitespace) => {
                out.push(' ');
            }
            _ => {}
        }
    }
    out.push_str(&decode_entities(rest));
    // Collapse the blank-line runs that markup indentation leaves behind.
    let mut text = String::with_capacity(out.len());
    let mut blank = 0;
    for line in out.lines().map(str::trim) {
        if line.trim().is_empty() {
            blank += 1;
            if blank > 1 {
                continue;
            }
        } else {
            blank = 0;
        }
        text.push_str(line);
        text.push('\n');
    }
    multi_line(text.trim_matches('\n'))
}

fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let decoded = after.find(';').filter(|&semi| semi <= 10).and_then(|semi| {
            let entity = &after[..semi];
            let c = match entity {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "nbsp" => Some(' '),
                _ => entity
                    .strip_prefix("#x")
                    .or_else(|| entity.strip_prefix("#X"))
                    .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                    .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                    .and_then(char::from_u32),
            };
            c.map(|c| (c, semi))
        });
        match decoded {
            Some((c, semi)) => {
                out.push(c);
                rest = &after[semi + 1..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn one_line_removes_every_line_break() {
        let check = |input: &str, expect: &str| assert_eq!(one_line(input), expect, "{input:?}");
        check("plain", "plain");
        check("a\r\nBcc: evil@x", "a Bcc: evil@x");
        check("a\rb\nc\u{2028}d\u{85}e\u{0}f\u{7f}g", "a b c d e f g");
        check("  spaced \t out  ", "spaced out");
        check("\r\n", "");
    }

    #[test]
    fn subjects_are_prefixed_and_bounded() {
        assert_eq!(subject(Some(" [ops] "), "x"), "[ops] x");
        assert_eq!(subject(Some(""), "x"), "x");
        let long = subject(None, &"é".repeat(500));
        assert_eq!(long.chars().count(), MAX_SUBJECT_CHARS);
        assert!(long.ends_with('…'));
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            escape_html(r#"<script>alert("x&y")</script>'"#),
            "&lt;script&gt;alert(&quot;x&amp;y&quot;)&lt;/script&gt;&#39;"
        );
    }

    #[test]
    fn html_becomes_readable_text() {
        let check = |html: &str, expect: &str| assert_eq!(html_to_text(html), expect, "{html}");
        check(
            "<p>Hello <b>world</b></p><p>second</p>",
            "Hello world\nsecond",
        );
        check("a<br>b<br/>c", "a\nb\nc");
        check(
            "x &lt;y&gt; &amp; &#233;&#x41; &bogus; &",
            "x <y> & éA &bogus; &",
        );
        check(
            "<style>p { color: red }</style>shown<script>hidden()</script>!",
            "shown!",
        );
        check("1 < 2", "1 < 2");
        check("<table><tr><td>k</td><td>v</td></tr></table>", "k v");
        check("<div>\n    <p>indented</p>\n</div>", "indented");
    }
}
