//! The double's entity parsers: what Telegram's `parse_mode` HTML and MarkdownV2 accept.
//!
//! Written from the Bot API documentation ("Formatting options") and the error texts
//! Telegram returns, independently of herald's own renderer, so that the renderer is
//! checked against a second implementation rather than against itself.
//!
//! One deliberate difference: a bare `&` that does not start `&lt;`, `&gt;`, `&amp;`,
//! `&quot;` or a numeric entity is rejected here, while Telegram shows it literally. A
//! renderer that forgets to escape `&` is wrong even where Telegram forgives it.

use std::fmt;

/// How `sendMessage` interprets `text`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseMode {
    /// No `parse_mode`: the text is shown as is.
    Plain,
    Html,
    MarkdownV2,
}

impl ParseMode {
    /// The Bot API's `parse_mode` value, matched case-insensitively as Telegram does.
    /// `None` for an unsupported value.
    pub fn from_api(value: Option<&str>) -> Option<ParseMode> {
        match value.map(str::to_ascii_lowercase).as_deref() {
            None | Some("") => Some(ParseMode::Plain),
            Some("html") => Some(ParseMode::Html),
            Some("markdownv2") => Some(ParseMode::MarkdownV2),
            _ => None,
        }
    }
}

impl fmt::Display for ParseMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParseMode::Plain => "plain",
            ParseMode::Html => "HTML",
            ParseMode::MarkdownV2 => "MarkdownV2",
        })
    }
}

/// The text a user sees once entities are parsed, or the reason Telegram gives after
/// `Bad Request: can't parse entities: `.
pub fn parse_entities(text: &str, mode: ParseMode) -> Result<String, String> {
    match mode {
        ParseMode::Plain => Ok(text.to_string()),
        ParseMode::Html => parse_html(text),
        ParseMode::MarkdownV2 => parse_markdown_v2(text),
    }
}

/// Length as Telegram counts it: UTF-16 code units (a character outside the Basic
/// Multilingual Plane counts twice). At least the number of characters, so a text within
/// this limit is within a per-character limit too.
pub fn telegram_len(text: &str) -> usize {
    text.chars().map(char::len_utf16).sum()
}

const HTML_TAGS: &[&str] = &[
    "b",
    "strong",
    "i",
    "em",
    "u",
    "ins",
    "s",
    "strike",
    "del",
    "span",
    "tg-spoiler",
    "a",
    "tg-emoji",
    "code",
    "pre",
    "blockquote",
];

fn parse_html(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut open: Vec<String> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'<' => {
                let start = i;
                let rest = &text[i + 1..];
                if let Some(rest) = rest.strip_prefix('/') {
                    let end = rest
                        .find('>')
                        .ok_or_else(|| format!("Unclosed end tag at byte offset {start}"))?;
                    let name = rest[..end].trim_end().to_ascii_lowercase();
                    let Some(expected) = open.pop() else {
                        return Err(format!("Unexpected end tag at byte offset {start}"));
                    };
                    if name != expected {
                        return Err(format!(
                            "Unmatched end tag at byte offset {start}, expected \"</{expected}>\", found \"</{name}>\""
                        ));
                    }
                    i = start + 2 + end + 1;
                } else {
                    let name_len = rest
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                        .unwrap_or(rest.len());
                    let name = rest[..name_len].to_ascii_lowercase();
                    if !HTML_TAGS.contains(&name.as_str()) {
                        return Err(format!(
                            "Unsupported start tag \"{name}\" at byte offset {start}"
                        ));
                    }
                    let end = rest
                        .find('>')
                        .ok_or_else(|| format!("Unclosed start tag at byte offset {start}"))?;
                    let attributes = parse_attributes(&rest[name_len..end])
                        .ok_or_else(|| format!("Unclosed start tag at byte offset {start}"))?;
                    check_attributes(&name, &attributes, start)?;
                    open.push(name);
                    i = start + 1 + end + 1;
                }
            }
            b'&' => {
                let (c, len) = html_entity(&text[i..])
                    .ok_or_else(|| format!("Unsupported HTML entity at byte offset {i}"))?;
                out.push(c);
                i += len;
            }
            _ => {
                // `i` is always on a character boundary: it only advances past whole
                // characters, ASCII markup or the whole of an entity.
                let c = text[i..].chars().next().unwrap_or('\u{fffd}');
                out.push(c);
                i += c.len_utf8();
            }
        }
    }
    if let Some(tag) = open.pop() {
        return Err(format!(
            "Can't find end tag corresponding to start tag \"{tag}\""
        ));
    }
    Ok(out)
}

/// `name="value"` pairs; `None` when a quoted value is not closed.
fn parse_attributes(mut s: &str) -> Option<Vec<(String, String)>> {
    let mut attributes = Vec::new();
    loop {
        s = s.trim_start();
        if s.is_empty() {
            return Some(attributes);
        }
        let name_len = s
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(s.len());
        let name = s[..name_len].to_ascii_lowercase();
        s = s[name_len..].trim_start();
        let value = if let Some(rest) = s.strip_prefix('=') {
            let rest = rest.trim_start();
            match rest.chars().next() {
                Some(q @ ('"' | '\'')) => {
                    let close = rest[1..].find(q)?;
                    s = &rest[close + 2..];
                    rest[1..close + 1].to_string()
                }
                _ => {
                    let len = rest.find(char::is_whitespace).unwrap_or(rest.len());
                    s = &rest[len..];
                    rest[..len].to_string()
                }
            }
        } else {
            String::new()
        };
        attributes.push((name, value));
    }
}

fn check_attributes(name: &str, attributes: &[(String, String)], at: usize) -> Result<(), String> {
    let get = |key: &str| attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v);
    match name {
        "span" if get("class").map(String::as_str) != Some("tg-spoiler") => Err(format!(
            "Tag \"span\" must have class \"tg-spoiler\" at byte offset {at}"
        )),
        "tg-emoji" if get("emoji-id").is_none() => Err(format!(
            "Tag \"tg-emoji\" must have attribute \"emoji-id\" at byte offset {at}"
        )),
        _ => Ok(()),
    }
}

/// The character an entity at the start of `s` stands for, and the entity's length.
fn html_entity(s: &str) -> Option<(char, usize)> {
    for (name, c) in [
        ("&lt;", '<'),
        ("&gt;", '>'),
        ("&amp;", '&'),
        ("&quot;", '"'),
    ] {
        if s.starts_with(name) {
            return Some((c, name.len()));
        }
    }
    let rest = s.strip_prefix("&#")?;
    let end = rest.find(';')?;
    let digits = &rest[..end];
    let code = match digits.strip_prefix(['x', 'X']) {
        Some(hex) if !hex.is_empty() && hex.len() <= 8 => u32::from_str_radix(hex, 16).ok()?,
        Some(_) => return None,
        None if !digits.is_empty() && digits.len() <= 10 => digits.parse().ok()?,
        None => return None,
    };
    let c = char::from_u32(code).filter(|&c| c != '\0')?;
    Some((c, 2 + end + 1))
}

/// Characters MarkdownV2 reserves outside code, pre and link URLs.
pub const MARKDOWN_V2_RESERVED: &str = "_*[]()~`>#+-=|{}.!\\";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Md {
    Bold,
    Italic,
    Underline,
    Strikethrough,
    Spoiler,
    Code,
    Pre,
    TextUrl,
    CustomEmoji,
}

impl Md {
    fn name(self) -> &'static str {
        match self {
            Md::Bold => "Bold",
            Md::Italic => "Italic",
            Md::Underline => "Underline",
            Md::Strikethrough => "Strikethrough",
            Md::Spoiler => "Spoiler",
            Md::Code => "Code",
            Md::Pre => "Pre",
            Md::TextUrl => "TextUrl",
            Md::CustomEmoji => "CustomEmoji",
        }
    }
}

fn reserved(c: char) -> String {
    format!("Character '{c}' is reserved and must be escaped with the preceding '\\'")
}

fn parse_markdown_v2(text: &str) -> Result<String, String> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let at = |k: usize| chars.get(k).map(|&(_, c)| c);
    let mut out = String::with_capacity(text.len());
    let mut open: Vec<(Md, usize)> = Vec::new();
    let mut k = 0;
    while k < chars.len() {
        let (offset, c) = chars[k];
        let top = open.last().map(|&(kind, _)| kind);
        // `\` escapes any ASCII character everywhere, code and pre included.
        if c == '\\' {
            match at(k + 1) {
                Some(n) if (1..=126).contains(&u32::from(n)) => {
                    out.push(n);
                    k += 2;
                    continue;
                }
                _ => return Err(reserved('\\')),
            }
        }
        if matches!(top, Some(Md::Code | Md::Pre)) {
            if c == '`' {
                if top == Some(Md::Pre) {
                    if at(k + 1) == Some('`') && at(k + 2) == Some('`') {
                        open.pop();
                        k += 3;
                        continue;
                    }
                    return Err(reserved('`'));
                }
                open.pop();
            } else {
                out.push(c);
            }
            k += 1;
            continue;
        }
        let line_start = k == 0 || at(k - 1) == Some('\n');
        let toggle = match c {
            '*' => Some((Md::Bold, 1)),
            '_' if at(k + 1) == Some('_') => Some((Md::Underline, 2)),
            '_' => Some((Md::Italic, 1)),
            '~' => Some((Md::Strikethrough, 1)),
            '|' if at(k + 1) == Some('|') => Some((Md::Spoiler, 2)),
            _ => None,
        };
        if let Some((kind, len)) = toggle {
            match open.iter().rposition(|&(o, _)| o == kind) {
                Some(p) if p + 1 == open.len() => {
                    open.pop();
                }
                Some(_) => {
                    let (inner, start) = open[open.len() - 1];
                    return Err(format!(
                        "Can't find end of {} entity at byte offset {start}",
                        inner.name()
                    ));
                }
                None => open.push((kind, offset)),
            }
            k += len;
            continue;
        }
        match c {
            '`' if at(k + 1) == Some('`') && at(k + 2) == Some('`') => {
                // The language runs to the end of the line.
                k += 3;
                while let Some(l) = at(k) {
                    k += 1;
                    if l == '\n' {
                        break;
                    }
                }
                open.push((Md::Pre, offset));
            }
            '`' => {
                open.push((Md::Code, offset));
                k += 1;
            }
            '[' => {
                open.push((Md::TextUrl, offset));
                k += 1;
            }
            '!' if at(k + 1) == Some('[') => {
                open.push((Md::CustomEmoji, offset));
                k += 2;
            }
            ']' if matches!(top, Some(Md::TextUrl | Md::CustomEmoji)) => {
                open.pop();
                if at(k + 1) != Some('(') {
                    return Err(format!("Can't find end of a URL at byte offset {offset}"));
                }
                k += 2;
                loop {
                    match at(k) {
                        None => {
                            return Err(format!("Can't find end of a URL at byte offset {offset}"));
                        }
                        Some('\\') if at(k + 1).is_some() => k += 2,
                        Some(')') => {
                            k += 1;
                            break;
                        }
                        Some(_) => k += 1,
                    }
                }
            }
            // A quotation: `>` starting a line (or `**>` for an expandable one).
            '>' if line_start => k += 1,
            c if MARKDOWN_V2_RESERVED.contains(c) => return Err(reserved(c)),
            c => {
                out.push(c);
                k += 1;
            }
        }
    }
    if let Some(&(kind, start)) = open.last() {
        return Err(format!(
            "Can't find end of {} entity at byte offset {start}",
            kind.name()
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(mode: ParseMode, text: &str, expect: Result<&str, &str>) {
        assert_eq!(
            parse_entities(text, mode).as_deref(),
            expect.map_err(|e| e.to_string()).as_deref(),
            "{mode} {text:?}"
        );
    }

    #[test]
    fn html() {
        use ParseMode::Html;
        check(Html, "plain", Ok("plain"));
        check(
            Html,
            "<b>bold</b> &lt;x&gt; &amp; &quot;",
            Ok("bold <x> & \""),
        );
        check(Html, "&#65;&#x42;&#X43;", Ok("ABC"));
        check(Html, "a > b", Ok("a > b"));
        check(
            Html,
            "<pre><code class=\"language-toml\">x = 1</code></pre>",
            Ok("x = 1"),
        );
        check(Html, "<a href=\"https://e.x/?a=1&amp;b=2\">l</a>", Ok("l"));
        check(Html, "<span class=\"tg-spoiler\">s</span>", Ok("s"));
        check(
            Html,
            "<span>s</span>",
            Err("Tag \"span\" must have class \"tg-spoiler\" at byte offset 0"),
        );
        check(
            Html,
            "a < b",
            Err("Unsupported start tag \"\" at byte offset 2"),
        );
        check(
            Html,
            "<div>x</div>",
            Err("Unsupported start tag \"div\" at byte offset 0"),
        );
        check(
            Html,
            "<b>x",
            Err("Can't find end tag corresponding to start tag \"b\""),
        );
        check(Html, "x</b>", Err("Unexpected end tag at byte offset 1"));
        check(
            Html,
            "<b><i>x</b></i>",
            Err("Unmatched end tag at byte offset 7, expected \"</i>\", found \"</b>\""),
        );
        check(Html, "<b", Err("Unclosed start tag at byte offset 0"));
        check(
            Html,
            "a & b",
            Err("Unsupported HTML entity at byte offset 2"),
        );
        check(
            Html,
            "&nbsp;",
            Err("Unsupported HTML entity at byte offset 0"),
        );
        check(
            Html,
            "&#0;",
            Err("Unsupported HTML entity at byte offset 0"),
        );
    }

    #[test]
    fn markdown_v2() {
        use ParseMode::MarkdownV2;
        check(MarkdownV2, "plain text", Ok("plain text"));
        check(
            MarkdownV2,
            "*bold* _it_ __u__ ~s~ ||sp||",
            Ok("bold it u s sp"),
        );
        check(MarkdownV2, "a\\.b\\!\\\\", Ok("a.b!\\"));
        check(MarkdownV2, "`co.de\\``", Ok("co.de`"));
        check(MarkdownV2, "```toml\nx = 1.0\n```", Ok("x = 1.0\n"));
        check(MarkdownV2, "[link](https://e.x/a_(b\\))", Ok("link"));
        check(MarkdownV2, ">quoted\\.\nnext", Ok("quoted.\nnext"));
        check(
            MarkdownV2,
            "done.",
            Err("Character '.' is reserved and must be escaped with the preceding '\\'"),
        );
        check(
            MarkdownV2,
            "a-b",
            Err("Character '-' is reserved and must be escaped with the preceding '\\'"),
        );
        check(
            MarkdownV2,
            "a|b",
            Err("Character '|' is reserved and must be escaped with the preceding '\\'"),
        );
        check(
            MarkdownV2,
            "x > y",
            Err("Character '>' is reserved and must be escaped with the preceding '\\'"),
        );
        check(
            MarkdownV2,
            "*bold",
            Err("Can't find end of Bold entity at byte offset 0"),
        );
        check(
            MarkdownV2,
            "ab `code",
            Err("Can't find end of Code entity at byte offset 3"),
        );
        check(
            MarkdownV2,
            "*a _b* c_",
            Err("Can't find end of Italic entity at byte offset 3"),
        );
        check(
            MarkdownV2,
            "[t]x",
            Err("Can't find end of a URL at byte offset 2"),
        );
        check(
            MarkdownV2,
            "```\na`b```",
            Err("Character '`' is reserved and must be escaped with the preceding '\\'"),
        );
        check(
            MarkdownV2,
            "trailing\\",
            Err("Character '\\' is reserved and must be escaped with the preceding '\\'"),
        );
        check(
            MarkdownV2,
            "\\é",
            Err("Character '\\' is reserved and must be escaped with the preceding '\\'"),
        );
    }

    #[test]
    fn length_counts_utf16_units() {
        assert_eq!(telegram_len("abc"), 3);
        assert_eq!(telegram_len("é"), 1);
        assert_eq!(telegram_len("\u{1F600}"), 2);
    }

    #[test]
    fn parse_modes_are_case_insensitive() {
        assert_eq!(ParseMode::from_api(Some("HTML")), Some(ParseMode::Html));
        assert_eq!(ParseMode::from_api(Some("html")), Some(ParseMode::Html));
        assert_eq!(
            ParseMode::from_api(Some("MarkdownV2")),
            Some(ParseMode::MarkdownV2)
        );
        assert_eq!(ParseMode::from_api(None), Some(ParseMode::Plain));
        assert_eq!(ParseMode::from_api(Some("bbcode")), None);
    }
}
