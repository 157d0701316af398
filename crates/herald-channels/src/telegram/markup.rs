//! Reading a formatter's HTML or MarkdownV2 into [`Styled`] text, to measure it as
//! Telegram will and to split it when it is longer than one message.
//!
//! The grammar is Telegram's ("Formatting options" in the Bot API docs). Where Telegram is
//! lenient this is too (a `&` that starts no entity and a bare `>` are text), so a
//! formatter's output that Telegram would accept is never refused here.

use super::render::{Span, Style, Styled};

/// Parses `parse_mode` HTML.
pub(crate) fn parse_html(text: &str) -> Result<Styled, String> {
    let mut out = Styled::default();
    // Open tags: name and index of their span in `out.spans`.
    let mut open: Vec<(String, Option<usize>)> = Vec::new();
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        if let Some(tag) = rest.strip_prefix('<') {
            let end = tag
                .find('>')
                .ok_or_else(|| format!("unclosed tag at byte offset {i}"))?;
            let inner = &tag[..end];
            if let Some(name) = inner.strip_prefix('/') {
                let name = name.trim().to_ascii_lowercase();
                match open.pop() {
                    Some((expected, span)) if expected == name => {
                        if let Some(span) = span {
                            out.spans[span].end = out.text.len();
                        }
                    }
                    Some((expected, _)) => {
                        return Err(format!(
                            "end tag </{name}> at byte offset {i} where </{expected}> was expected"
                        ));
                    }
                    None => return Err(format!("unexpected end tag at byte offset {i}")),
                }
            } else {
                let name_len = inner
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                    .unwrap_or(inner.len());
                let name = inner[..name_len].to_ascii_lowercase();
                let attrs = &inner[name_len..];
                let style = match name.as_str() {
                    "b" | "strong" => Some(Style::Bold),
                    "i" | "em" => Some(Style::Italic),
                    "u" | "ins" => Some(Style::Underline),
                    "s" | "strike" | "del" => Some(Style::Strikethrough),
                    "tg-spoiler" | "span" => Some(Style::Spoiler),
                    "code" => {
                        // `<pre><code class="language-x">` is a block with a language.
                        let lang = attribute(attrs, "class")
                            .and_then(|c| c.strip_prefix("language-").map(str::to_string));
                        match (open.last(), lang) {
                            (Some((parent, Some(span))), Some(lang)) if parent == "pre" => {
                                out.spans[*span].style = Style::Pre(Some(lang));
                                None
                            }
                            (Some((parent, _)), _) if parent == "pre" => None,
                            _ => Some(Style::Code),
                        }
                    }
                    "pre" => Some(Style::Pre(None)),
                    "a" => Some(Style::Link(attribute(attrs, "href").unwrap_or_default())),
                    "blockquote" => Some(Style::Blockquote),
                    "tg-emoji" => Some(Style::CustomEmoji(
                        attribute(attrs, "emoji-id").unwrap_or_default(),
                    )),
                    _ => return Err(format!("unsupported tag <{name}> at byte offset {i}")),
                };
                let span = style.map(|style| {
                    out.spans.push(Span {
                        style,
                        start: out.text.len(),
                        end: out.text.len(),
                    });
                    out.spans.len() - 1
                });
                open.push((name, span));
            }
            i += 1 + end + 1;
        } else if let Some((c, len)) = html_entity(rest) {
            out.text.push(c);
            i += len;
        } else {
            let c = rest.chars().next().unwrap_or('\u{fffd}');
            out.text.push(c);
            i += c.len_utf8();
        }
    }
    if let Some((name, _)) = open.pop() {
        return Err(format!("tag <{name}> is not closed"));
    }
    out.spans.retain(|s| s.start < s.end);
    Ok(out)
}

/// The (entity-decoded) value of attribute `name` in `attrs` (` href="…" class=x`).
fn attribute(attrs: &str, name: &str) -> Option<String> {
    let mut rest = attrs;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            return None;
        }
        let key_len = rest
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(rest.len());
        let key = rest[..key_len].to_ascii_lowercase();
        rest = rest[key_len..].trim_start();
        let value = match rest.strip_prefix('=') {
            Some(after) => {
                let after = after.trim_start();
                match after.chars().next() {
                    Some(q @ ('"' | '\'')) => {
                        let close = after[1..].find(q).map_or(after.len(), |p| p + 1);
                        rest = after.get(close + 1..).unwrap_or("");
                        &after[1..close]
                    }
                    _ => {
                        let len = after.find(char::is_whitespace).unwrap_or(after.len());
                        rest = &after[len..];
                        &after[..len]
                    }
                }
            }
            None => "",
        };
        if key == name {
            return Some(decode_entities(value));
        }
    }
}

fn decode_entities(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if let Some((c, len)) = html_entity(&text[i..]) {
            out.push(c);
            i += len;
        } else {
            let c = text[i..].chars().next().unwrap_or('\u{fffd}');
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

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
    Some((c, 3 + end))
}

/// Parses `parse_mode` MarkdownV2.
pub(crate) fn parse_markdown_v2(text: &str) -> Result<Styled, String> {
    let chars: Vec<char> = text.chars().collect();
    let at = |k: usize| chars.get(k).copied();
    let mut out = Styled::default();
    // Open entities: their marker kind and span index.
    let mut open: Vec<(&'static str, usize)> = Vec::new();
    let mut k = 0;
    let push_span = |out: &mut Styled, style: Style| {
        out.spans.push(Span {
            style,
            start: out.text.len(),
            end: out.text.len(),
        });
        out.spans.len() - 1
    };
    while k < chars.len() {
        let c = chars[k];
        if c == '\\' {
            match at(k + 1) {
                Some(n) if (1..=126).contains(&u32::from(n)) => {
                    out.text.push(n);
                    k += 2;
                    continue;
                }
                _ => return Err("a '\\' escapes nothing".to_string()),
            }
        }
        let top = open.last().map(|&(kind, _)| kind);
        if matches!(top, Some("`" | "```")) {
            if c == '`' {
                let Some((kind, span)) = open.pop() else {
                    unreachable!("top was Some")
                };
                out.spans[span].end = out.text.len();
                if kind == "```" {
                    if at(k + 1) != Some('`') || at(k + 2) != Some('`') {
                        return Err("an unescaped '`' inside a code block".to_string());
                    }
                    k += 2;
                }
            } else {
                out.text.push(c);
            }
            k += 1;
            continue;
        }
        let toggle = match c {
            '*' => Some(("*", 1, Style::Bold)),
            '_' if at(k + 1) == Some('_') => Some(("__", 2, Style::Underline)),
            '_' => Some(("_", 1, Style::Italic)),
            '~' => Some(("~", 1, Style::Strikethrough)),
            '|' if at(k + 1) == Some('|') => Some(("||", 2, Style::Spoiler)),
            _ => None,
        };
        if let Some((kind, len, style)) = toggle {
            if top == Some(kind) {
                if let Some((_, span)) = open.pop() {
                    out.spans[span].end = out.text.len();
                }
            } else if open.iter().any(|&(o, _)| o == kind) {
                return Err(format!("entity '{kind}' closed across another"));
            } else {
                let span = push_span(&mut out, style);
                open.push((kind, span));
            }
            k += len;
            continue;
        }
        let line_start = k == 0 || at(k - 1) == Some('\n');
        match c {
            '`' if at(k + 1) == Some('`') && at(k + 2) == Some('`') => {
                k += 3;
                let mut lang = String::new();
                while let Some(l) = at(k) {
                    k += 1;
                    if l == '\n' {
                        break;
                    }
                    lang.push(l);
                }
                let lang = lang.trim();
                let style = Style::Pre((!lang.is_empty()).then(|| lang.to_string()));
                let span = push_span(&mut out, style);
                open.push(("```", span));
            }
            '`' => {
                let span = push_span(&mut out, Style::Code);
                open.push(("`", span));
                k += 1;
            }
            '[' => {
                let span = push_span(&mut out, Style::Link(String::new()));
                open.push(("[", span));
                k += 1;
            }
            '!' if at(k + 1) == Some('[') => {
                let span = push_span(&mut out, Style::CustomEmoji(String::new()));
                open.push(("[", span));
                k += 2;
            }
            ']' if top == Some("[") => {
                let Some((_, span)) = open.pop() else {
                    unreachable!("top was Some")
                };
                out.spans[span].end = out.text.len();
                if at(k + 1) != Some('(') {
                    return Err("a link without (URL)".to_string());
                }
                k += 2;
                let mut url = String::new();
                loop {
                    match at(k) {
                        None => return Err("a link URL without ')'".to_string()),
                        Some('\\') if at(k + 1).is_some() => {
                            url.extend(at(k + 1));
                            k += 2;
                        }
                        Some(')') => {
                            k += 1;
                            break;
                        }
                        Some(u) => {
                            url.push(u);
                            k += 1;
                        }
                    }
                }
                out.spans[span].style = match &out.spans[span].style {
                    Style::CustomEmoji(_) => Style::CustomEmoji(
                        url.strip_prefix("tg://emoji?id=")
                            .unwrap_or(&url)
                            .to_string(),
                    ),
                    _ => Style::Link(url),
                };
            }
            '>' if line_start => k += 1,
            c if super::render::MARKDOWN_V2_RESERVED.contains(c) => {
                return Err(format!("character '{c}' is reserved and not escaped"));
            }
            c => {
                out.text.push(c);
                k += 1;
            }
        }
    }
    if let Some((kind, _)) = open.last() {
        return Err(format!("entity '{kind}' is not closed"));
    }
    out.spans.retain(|s| s.start < s.end);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telegram::ParseMode;
    use crate::telegram::render::write;

    /// Parses and writes back as HTML: the span tree survives the round trip.
    fn check_html(input: &str, expect: &str) {
        let styled = parse_html(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(write(&styled, ParseMode::Html), expect, "{input}");
    }

    #[test]
    fn html_round_trips() {
        check_html(
            "<b>bold <i>both</i></b> &amp; &#65;",
            "<b>bold <i>both</i></b> &amp; A",
        );
        check_html("<strong>s</strong><em>e</em>", "<b>s</b><i>e</i>");
        check_html(
            "<pre><code class=\"language-rust\">fn x() {}</code></pre>",
            "<pre><code class=\"language-rust\">fn x() {}</code></pre>",
        );
        check_html("<pre>a &lt; b</pre>", "<pre>a &lt; b</pre>");
        check_html(
            "<a href=\"https://e.x/?a=1&amp;b=2\">l</a>",
            "<a href=\"https://e.x/?a=1&amp;b=2\">l</a>",
        );
        check_html("a > b & c", "a &gt; b &amp; c");
        check_html(
            "<span class=\"tg-spoiler\">s</span>",
            "<tg-spoiler>s</tg-spoiler>",
        );
    }

    #[test]
    fn html_errors() {
        assert!(parse_html("<b>x").is_err());
        assert!(parse_html("x</b>").is_err());
        assert!(parse_html("<div>x</div>").is_err());
        assert!(parse_html("<b>x</i>").is_err());
    }

    #[test]
    fn markdown_v2_to_html() {
        let check = |input: &str, expect: &str| {
            let styled = parse_markdown_v2(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(write(&styled, ParseMode::Html), expect, "{input}");
        };
        check("*bold _it_* \\. \\!", "<b>bold <i>it</i></b> . !");
        check(
            "__u__ ~s~ ||sp||",
            "<u>u</u> <s>s</s> <tg-spoiler>sp</tg-spoiler>",
        );
        check("`a<b`", "<code>a&lt;b</code>");
        check(
            "```rust\nfn x() {}\n```",
            "<pre><code class=\"language-rust\">fn x() {}\n</code></pre>",
        );
        check(
            "[site](https://e.x/a\\)b)",
            "<a href=\"https://e.x/a)b\">site</a>",
        );
        check(">quote", "quote");
        assert!(parse_markdown_v2("done.").is_err());
        assert!(parse_markdown_v2("*open").is_err());
        assert!(parse_markdown_v2("*a _b* c_").is_err());
    }
}
