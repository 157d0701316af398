//! Escaping per channel: text from an event must never be read as markup.
//!
//! Event fields (ids, names, metadata, error text) come from publishers and may contain
//! anything; pass each through the escaper of the format you emit.

/// HTML text or attribute value (Telegram's HTML mode and email): `& < > " '`.
pub fn html(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
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

/// Characters Telegram MarkdownV2 reserves outside entities.
const MARKDOWN_V2_RESERVED: &[char] = &[
    '_', '*', '[', ']', '(', ')', '~', '`', '>', '#', '+', '-', '=', '|', '{', '}', '.', '!', '\\',
];

/// Telegram MarkdownV2 text outside entities: every reserved character gets a `\`.
pub fn markdown_v2(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if MARKDOWN_V2_RESERVED.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Telegram MarkdownV2 inside `pre` and `code` entities: only `` ` `` and `\`.
pub fn markdown_v2_code(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if c == '`' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Slack `mrkdwn` and plain text: `& < >` (Slack's own three escapes).
pub fn slack(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// Discord markdown: `\ * _ ~ ` | > #` and `-` get a `\` so text stays literal.
/// (Mentions are neutralised by the webhook body's `allowed_mentions`, not here.)
pub fn discord(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if matches!(
            c,
            '\\' | '*' | '_' | '~' | '`' | '|' | '>' | '#' | '-' | '[' | ']'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A JSON string literal, quotes included, for bodies written by hand.
/// (Prefer building a `serde_json::Value`; this is for small templates.)
pub fn json_string(s: &str) -> String {
    let mut out = String::new();
    crate::json::write_string(&mut out, s);
    out
}

/// At most `max` characters; a cut string ends with `…` (counted in `max`).
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(f: fn(&str) -> String, input: &str, expect: &str) {
        assert_eq!(f(input), expect, "input: {input:?}");
    }

    #[test]
    fn html_escapes_markup_and_quotes() {
        check(html, "a < b && c > d", "a &lt; b &amp;&amp; c &gt; d");
        check(
            html,
            r#"<a href="x" title='y'>"#,
            "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;",
        );
        check(html, "plain ü 🚀", "plain ü 🚀");
    }

    #[test]
    fn markdown_v2_escapes_every_reserved_character() {
        check(
            markdown_v2,
            "_*[]()~`>#+-=|{}.!\\",
            r"\_\*\[\]\(\)\~\`\>\#\+\-\=\|\{\}\.\!\\",
        );
        check(
            markdown_v2,
            "capsule.create failed!",
            r"capsule\.create failed\!",
        );
        check(markdown_v2, "ok", "ok");
    }

    #[test]
    fn markdown_v2_code_escapes_backtick_and_backslash_only() {
        check(markdown_v2_code, r"a.b `c` \d *e*", r"a.b \`c\` \\d *e*");
    }

    #[test]
    fn slack_escapes_its_three_characters() {
        check(
            slack,
            "<!channel> & <@U1>",
            "&lt;!channel&gt; &amp; &lt;@U1&gt;",
        );
    }

    #[test]
    fn discord_escapes_markdown() {
        check(
            discord,
            "**bold** _it_ `code` > q",
            r"\*\*bold\*\* \_it\_ \`code\` \> q",
        );
    }

    #[test]
    fn json_string_is_a_valid_literal() {
        check(json_string, "a\"b\\c\nd\u{1}", r#""a\"b\\c\nd\u0001""#);
        let back: String = serde_json::from_str(&json_string("x\"\u{2028}y")).unwrap();
        assert_eq!(back, "x\"\u{2028}y");
    }

    #[test]
    fn truncate_counts_characters() {
        assert_eq!(truncate("héllo", 5), "héllo");
        assert_eq!(truncate("héllo world", 5), "héll…");
        assert_eq!(truncate("abc", 0), "…");
    }

    /// Escaped text never contains an unescaped reserved character.
    #[test]
    fn markdown_v2_output_has_no_bare_reserved_character() {
        let all: String = (0u32..0x250).filter_map(char::from_u32).collect();
        let escaped = markdown_v2(&all);
        let mut chars = escaped.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                assert!(
                    chars
                        .next()
                        .is_some_and(|n| MARKDOWN_V2_RESERVED.contains(&n))
                );
            } else {
                assert!(!MARKDOWN_V2_RESERVED.contains(&c), "bare {c:?}");
            }
        }
    }
}
