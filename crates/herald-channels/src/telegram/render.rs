//! Telegram messages: herald's default rendering of an event, splitting long messages, and
//! writing styled text as HTML, MarkdownV2 or plain text.
//!
//! Text is built as [`Styled`]: the visible characters plus style spans over them. Escaping
//! happens only when a span tree is written out, so a split (which cuts the visible text)
//! can never fall inside an escape sequence or a tag, and a span cut in two is closed at
//! the end of one part and reopened at the start of the next.

use std::fmt::Write as _;

use herald_core::{ActorType, Event, Outcome};

use super::ParseMode;

/// Longest message text Telegram accepts, after entity parsing. Counted in UTF-16 code
/// units, as Telegram counts entity offsets, which is never less than the number of
/// characters: a part within this limit is within either reading of it.
pub const MAX_MESSAGE_LEN: usize = 4096;

/// Most messages one event becomes. A longer text is split into ordered parts labelled
/// `(1/3) `, …; what does not fit in this many parts is cut off, and the last part ends
/// with [`truncation_marker`].
pub const MAX_PARTS: usize = 4;

/// Room kept in every part of a split message for its `(k/n) ` label.
const LABEL_RESERVE: usize = 16;
/// Room kept in the last part of a truncated message for the marker.
const MARKER_RESERVE: usize = 64;

/// The line that ends a message cut short, saying how many characters were left out.
pub fn truncation_marker(omitted_chars: usize) -> String {
    format!("\n[… truncated: {omitted_chars} more characters not shown]")
}

/// Length as Telegram counts it: UTF-16 code units.
pub fn telegram_len(text: &str) -> usize {
    text.chars().map(char::len_utf16).sum()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Style {
    Bold,
    Italic,
    Underline,
    Strikethrough,
    Spoiler,
    Code,
    /// A code block, with its language if any.
    Pre(Option<String>),
    Link(String),
    Blockquote,
    CustomEmoji(String),
}

/// A style over `text[start..end]` (byte offsets on character boundaries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) style: Style,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// Visible text plus properly nested style spans (no two spans cross).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Styled {
    pub(crate) text: String,
    pub(crate) spans: Vec<Span>,
}

impl Styled {
    pub(crate) fn plain(text: &str) -> Styled {
        let mut styled = Styled::default();
        styled.push(text);
        styled
    }

    /// Appends unstyled text. Control characters other than newline and tab become
    /// U+FFFD, so nothing invisible or rejectable reaches the chat.
    pub(crate) fn push(&mut self, text: &str) {
        self.text.extend(text.chars().map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                '\u{fffd}'
            } else {
                c
            }
        }));
    }

    pub(crate) fn push_styled(&mut self, style: Style, text: &str) {
        let start = self.text.len();
        self.push(text);
        if self.text.len() > start {
            self.spans.push(Span {
                style,
                start,
                end: self.text.len(),
            });
        }
    }

    pub(crate) fn len(&self) -> usize {
        telegram_len(&self.text)
    }

    /// `text[start..end]` with the spans over it, clipped.
    fn slice(&self, start: usize, end: usize) -> Styled {
        let spans = self
            .spans
            .iter()
            .filter(|s| s.start < end && s.end > start)
            .map(|s| Span {
                style: s.style.clone(),
                start: s.start.max(start) - start,
                end: s.end.min(end) - start,
            })
            .collect();
        Styled {
            text: self.text[start..end].to_string(),
            spans,
        }
    }

    /// Appends `other`, its spans moved along.
    pub(crate) fn append(&mut self, other: Styled) {
        let shift = self.text.len();
        self.text.push_str(&other.text);
        self.spans.extend(other.spans.into_iter().map(|span| Span {
            start: span.start + shift,
            end: span.end + shift,
            ..span
        }));
    }

    /// Drops trailing whitespace, clipping the spans to what is left.
    pub(crate) fn trim_end(&mut self) {
        let trimmed = self.text.trim_end().len();
        self.text.truncate(trimmed);
        for span in &mut self.spans {
            span.end = span.end.min(trimmed);
        }
        self.spans.retain(|s| s.start < s.end);
    }

    /// `prefix` (unstyled) before this text.
    fn prefixed(mut self, prefix: &str) -> Styled {
        let shift = prefix.len();
        for span in &mut self.spans {
            span.start += shift;
            span.end += shift;
        }
        self.text.insert_str(0, prefix);
        self
    }
}

/// herald's default Telegram message for `event`, written for `mode`: one string per
/// message to send, in order (more than one only for very long events; see [`MAX_PARTS`]).
///
/// The message: a first line with the outcome (`FAILED`, `OK`, or `EVENT` when the event
/// has none) and the event type, then the resource, actor, team, time and event id, the
/// metadata as `key: value` lines and the error in a code block. Pure: `herald explain`
/// shows exactly what would be sent.
pub fn render(event: &Event, mode: ParseMode) -> Vec<String> {
    split(&compose(event))
        .iter()
        .map(|part| write(part, mode))
        .collect()
}

fn compose(event: &Event) -> Styled {
    let mut m = Styled::default();
    let marker = match event.outcome {
        Some(Outcome::Error) => "FAILED",
        Some(Outcome::Success) => "OK",
        None => "EVENT",
    };
    m.push_styled(Style::Bold, marker);
    m.push(" ");
    m.push_styled(Style::Bold, &event.event);
    m.push("\n");
    if let Some(resource) = &event.resource {
        m.push("Resource: ");
        m.push(&resource.kind);
        m.push(" ");
        m.push_styled(Style::Code, &resource.id);
        m.push("\n");
    }
    if let Some(actor) = &event.actor {
        let kind = match actor.kind {
            ActorType::User => "user",
            ActorType::ApiKey => "api key",
            ActorType::System => "system",
        };
        m.push("Actor: ");
        match (&actor.name, &actor.id) {
            (Some(name), id) => {
                m.push(name);
                m.push(" (");
                m.push(kind);
                if let Some(id) = id {
                    m.push(" ");
                    m.push_styled(Style::Code, id);
                }
                m.push(")");
            }
            (None, Some(id)) => {
                m.push(kind);
                m.push(" ");
                m.push_styled(Style::Code, id);
            }
            (None, None) => m.push(kind),
        }
        m.push("\n");
    }
    m.push("Team: ");
    m.push(event.team_id.as_str());
    m.push("\nTime: ");
    m.push(&event.timestamp.to_string());
    m.push("\nEvent: ");
    m.push_styled(Style::Code, &event.id);
    m.push("\n");
    if !event.metadata.is_empty() {
        m.push("\n");
        for (key, value) in &event.metadata {
            m.push_styled(Style::Bold, key);
            m.push(": ");
            m.push(value);
            m.push("\n");
        }
    }
    if let Some(error) = &event.error {
        m.push("\n");
        m.push_styled(Style::Bold, "Error:");
        m.push("\n");
        m.push_styled(Style::Pre(None), error);
    }
    m.trim_end();
    m
}

/// Splits `m` into the parts to send, each within [`MAX_MESSAGE_LEN`] once written in
/// any parse mode: at most [`MAX_PARTS`], cut at a line break where one is near the
/// limit, else at a space, else between two characters.
pub(crate) fn split(m: &Styled) -> Vec<Styled> {
    if m.len() <= MAX_MESSAGE_LEN {
        return vec![m.clone()];
    }
    let budget = MAX_MESSAGE_LEN - LABEL_RESERVE;
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    let mut start = 0;
    let mut omitted = 0;
    while start < m.text.len() {
        let rest = &m.text[start..];
        if telegram_len(rest) <= budget {
            ranges.push((start, m.text.len()));
            break;
        }
        if ranges.len() + 1 == MAX_PARTS {
            let end = start + cut_point(rest, budget - MARKER_RESERVE).0;
            ranges.push((start, end));
            omitted = m.text[end..].chars().count();
            break;
        }
        let (end, next) = cut_point(rest, budget);
        ranges.push((start, start + end));
        start += next;
    }
    // Whitespace-only pieces would be empty messages; a truncated last piece is kept, as
    // it carries the marker.
    let last = ranges.len() - 1;
    let ranges: Vec<(usize, usize)> = ranges
        .into_iter()
        .enumerate()
        .filter(|&(i, (s, e))| (omitted > 0 && i == last) || !m.text[s..e].trim().is_empty())
        .map(|(_, range)| range)
        .collect();
    let count = ranges.len();
    ranges
        .iter()
        .enumerate()
        .map(|(i, &(s, e))| {
            let mut part = m.slice(s, e).prefixed(&format!("({}/{count}) ", i + 1));
            if omitted > 0 && i + 1 == count {
                part.push(&truncation_marker(omitted));
            }
            part
        })
        .collect()
}

/// Where to cut `text` so that the first piece is at most `budget` UTF-16 units: the
/// piece's end and where the next piece starts (after the line break or space cut at).
fn cut_point(text: &str, budget: usize) -> (usize, usize) {
    let mut units = 0;
    let mut limit = text.len();
    for (i, c) in text.char_indices() {
        units += c.len_utf16();
        if units > budget {
            limit = i;
            break;
        }
    }
    // Prefer a break in the last quarter of the piece; a long line is cut mid-line.
    let floor = limit - limit / 4;
    let window = &text[..limit];
    if let Some(nl) = window.rfind('\n').filter(|&p| p >= floor && p > 0) {
        return (nl, nl + 1);
    }
    if let Some(space) = window.rfind(' ').filter(|&p| p >= floor && p > 0) {
        return (space, space + 1);
    }
    (limit, limit)
}

/// Writes `m` in `mode`'s markup; the visible text of the result is exactly `m.text`.
pub(crate) fn write(m: &Styled, mode: ParseMode) -> String {
    match mode {
        ParseMode::Plain => m.text.clone(),
        ParseMode::Html => write_markup(m, &Html),
        ParseMode::MarkdownV2 => write_markup(m, &MarkdownV2),
    }
}

trait Markup {
    fn text(&self, out: &mut String, text: &str, in_code: bool);
    fn open(&self, out: &mut String, style: &Style);
    fn close(&self, out: &mut String, style: &Style);
}

fn write_markup(m: &Styled, markup: &dyn Markup) -> String {
    let mut spans: Vec<&Span> = m.spans.iter().filter(|s| s.start < s.end).collect();
    // Outer spans first; equal ranges keep their order (outer first by construction).
    spans.sort_by_key(|s| (s.start, std::cmp::Reverse(s.end)));
    let mut out = String::with_capacity(m.text.len() + m.text.len() / 8);
    let mut open: Vec<&Span> = Vec::new();
    let mut pos = 0;
    let in_code = |open: &[&Span]| {
        open.iter()
            .any(|s| matches!(s.style, Style::Code | Style::Pre(_)))
    };
    let close_until = |out: &mut String, open: &mut Vec<&Span>, pos: &mut usize, upto: usize| {
        while let Some(top) = open.last().copied() {
            if top.end > upto {
                break;
            }
            markup.text(out, &m.text[*pos..top.end], in_code(open));
            *pos = top.end;
            markup.close(out, &top.style);
            open.pop();
        }
    };
    for span in spans {
        close_until(&mut out, &mut open, &mut pos, span.start);
        // A span crossing its parent's end would be invalid markup; Styled never has one.
        if open.last().is_some_and(|top| span.end > top.end) {
            continue;
        }
        markup.text(&mut out, &m.text[pos..span.start], in_code(&open));
        pos = span.start;
        markup.open(&mut out, &span.style);
        open.push(span);
    }
    close_until(&mut out, &mut open, &mut pos, usize::MAX);
    markup.text(&mut out, &m.text[pos..], false);
    out
}

struct Html;

impl Markup for Html {
    fn text(&self, out: &mut String, text: &str, _in_code: bool) {
        out.push_str(&escape_html(text));
    }

    fn open(&self, out: &mut String, style: &Style) {
        match style {
            Style::Bold => out.push_str("<b>"),
            Style::Italic => out.push_str("<i>"),
            Style::Underline => out.push_str("<u>"),
            Style::Strikethrough => out.push_str("<s>"),
            Style::Spoiler => out.push_str("<tg-spoiler>"),
            Style::Code => out.push_str("<code>"),
            Style::Pre(None) => out.push_str("<pre>"),
            Style::Pre(Some(lang)) => {
                let _ = write!(
                    out,
                    "<pre><code class=\"language-{}\">",
                    escape_html_attribute(lang)
                );
            }
            Style::Link(url) => {
                let _ = write!(out, "<a href=\"{}\">", escape_html_attribute(url));
            }
            Style::Blockquote => out.push_str("<blockquote>"),
            Style::CustomEmoji(id) => {
                let _ = write!(out, "<tg-emoji emoji-id=\"{}\">", escape_html_attribute(id));
            }
        }
    }

    fn close(&self, out: &mut String, style: &Style) {
        out.push_str(match style {
            Style::Bold => "</b>",
            Style::Italic => "</i>",
            Style::Underline => "</u>",
            Style::Strikethrough => "</s>",
            Style::Spoiler => "</tg-spoiler>",
            Style::Code => "</code>",
            Style::Pre(None) => "</pre>",
            Style::Pre(Some(_)) => "</code></pre>",
            Style::Link(_) => "</a>",
            Style::Blockquote => "</blockquote>",
            Style::CustomEmoji(_) => "</tg-emoji>",
        });
    }
}

struct MarkdownV2;

impl Markup for MarkdownV2 {
    fn text(&self, out: &mut String, text: &str, in_code: bool) {
        if in_code {
            out.push_str(&escape_markdown_v2_code(text));
        } else {
            out.push_str(&escape_markdown_v2(text));
        }
    }

    fn open(&self, out: &mut String, style: &Style) {
        // `__` directly after `_` would be read as one marker: Telegram's documented
        // separator is a carriage return, which it ignores.
        let marker = match style {
            Style::Bold => "*",
            Style::Italic => "_",
            Style::Underline => "__",
            Style::Strikethrough => "~",
            Style::Spoiler => "||",
            Style::Code => "`",
            Style::Pre(lang) => {
                out.push_str("```");
                if let Some(lang) = lang {
                    out.extend(lang.chars().filter(|c| {
                        c.is_ascii_alphanumeric() || *c == '-' || *c == '_' || *c == '+'
                    }));
                }
                out.push('\n');
                return;
            }
            Style::Link(_) => "[",
            Style::CustomEmoji(_) => "![",
            Style::Blockquote => "",
        };
        if out.ends_with('_') && marker.starts_with('_') {
            out.push('\r');
        }
        out.push_str(marker);
    }

    fn close(&self, out: &mut String, style: &Style) {
        let marker = match style {
            Style::Bold => "*",
            Style::Italic => "_",
            Style::Underline => "__",
            Style::Strikethrough => "~",
            Style::Spoiler => "||",
            Style::Code => "`",
            Style::Pre(_) => "```",
            Style::Link(url) => {
                let _ = write!(out, "]({})", escape_markdown_v2_url(url));
                return;
            }
            Style::CustomEmoji(id) => {
                let _ = write!(out, "](tg://emoji?id={})", escape_markdown_v2_url(id));
                return;
            }
            Style::Blockquote => "",
        };
        if out.ends_with('_') && marker.starts_with('_') {
            out.push('\r');
        }
        out.push_str(marker);
    }
}

/// Escapes text for `parse_mode` HTML: `<`, `>` and `&`.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            c => out.push(c),
        }
    }
    out
}

fn escape_html_attribute(text: &str) -> String {
    escape_html(text).replace('"', "&quot;")
}

/// Characters MarkdownV2 reserves outside code blocks and link URLs.
pub const MARKDOWN_V2_RESERVED: &str = "_*[]()~`>#+-=|{}.!\\";

/// Escapes text for `parse_mode` MarkdownV2 outside entities: each of
/// [`MARKDOWN_V2_RESERVED`] gets a `\`.
pub fn escape_markdown_v2(text: &str) -> String {
    escape_with(text, MARKDOWN_V2_RESERVED)
}

/// Escapes the inside of MarkdownV2 `code` and `pre`: only `` ` `` and `\`.
pub fn escape_markdown_v2_code(text: &str) -> String {
    escape_with(text, "`\\")
}

fn escape_markdown_v2_url(text: &str) -> String {
    escape_with(text, ")\\")
}

fn escape_with(text: &str, reserved: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for c in text.chars() {
        if reserved.contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
