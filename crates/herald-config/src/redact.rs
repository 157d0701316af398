//! Which parts of a configuration file hold secrets, so that no diagnostic shows them.
//!
//! A diagnostic renders its source line and the lines around it, and serde quotes a value
//! of the wrong type; either would print a secret written literally. The spans found here
//! are masked in the source text diagnostics render, and a message about a value inside
//! one has the value removed.

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// Keys whose value is a secret wherever they appear (`[server] admin_token`, a team's
/// `api_keys`, a webhook `secret`, `[telegram] bot_token`, `[email] password`).
const SECRET_KEYS: [&str; 5] = ["admin_token", "api_keys", "secret", "bot_token", "password"];

/// The byte spans of every literal secret value in `doc` (an `env:NAME` reference is not
/// a secret and stays visible, so that its diagnostics can be followed).
pub(crate) fn secret_spans(doc: &DeTable<'_>) -> Vec<Range<usize>> {
    let mut spans = Vec::new();
    walk_table(doc, &mut spans);
    spans
}

fn walk_table(table: &DeTable<'_>, spans: &mut Vec<Range<usize>>) {
    for (key, value) in table {
        // `[store] url` may hold the database's password (elsewhere a `url` is public).
        if key.get_ref().as_ref() == "store"
            && let DeValue::Table(store) = value.get_ref()
        {
            for (key, value) in store {
                if key.get_ref().as_ref() == "url" {
                    literal_spans(value, spans);
                }
            }
        }
        if SECRET_KEYS.contains(&key.get_ref().as_ref()) {
            literal_spans(value, spans);
        } else {
            walk_value(value, spans);
        }
    }
}

fn walk_value(value: &Spanned<DeValue<'_>>, spans: &mut Vec<Range<usize>>) {
    match value.get_ref() {
        DeValue::Table(t) => walk_table(t, spans),
        DeValue::Array(items) => items.iter().for_each(|v| walk_value(v, spans)),
        // A URL with a password (`redis://:pw@host`, a source's or the live bus's `url`).
        DeValue::String(s) if has_password(s) => spans.push(value.span()),
        _ => {}
    }
}

fn has_password(s: &str) -> bool {
    s.contains("://") && url::Url::parse(s).is_ok_and(|u| u.password().is_some())
}

/// Everything under a secret key, except `env:` references.
fn literal_spans(value: &Spanned<DeValue<'_>>, spans: &mut Vec<Range<usize>>) {
    match value.get_ref() {
        DeValue::String(s) if s.starts_with("env:") => {}
        DeValue::Array(items) => items.iter().for_each(|v| literal_spans(v, spans)),
        _ => spans.push(value.span()),
    }
}

/// `text` with every byte of `spans` but line breaks replaced by `*`: byte offsets, and
/// so every diagnostic's span, stay valid.
pub(crate) fn mask(text: &str, spans: &[Range<usize>]) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, c) in text.char_indices() {
        if c != '\n' && spans.iter().any(|s| s.contains(&i)) {
            out.extend(std::iter::repeat_n('*', c.len_utf8()));
        } else {
            out.push(c);
        }
    }
    out
}

/// A serde message about a value inside a secret span, without the value: serde writes
/// `invalid type: integer `123`, expected a string`.
pub(crate) fn hide_value(message: &str) -> String {
    match message.find(", expected") {
        Some(i) => format!("invalid secret value (not shown){}", &message[i..]),
        None => "invalid secret value (not shown)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_literal_secrets_and_keeps_env_references() {
        let text = "[server]\nadmin_token = \"lit\"\n[teams.a]\napi_keys = [\"env:K\", \"k2\"]\n\
                    [teams.a.channels.w]\nsecret = 42\nurl = \"https://x\"\n";
        let doc = DeTable::parse(text).unwrap();
        let masked = mask(text, &secret_spans(doc.get_ref()));
        assert_eq!(
            masked,
            "[server]\nadmin_token = *****\n[teams.a]\napi_keys = [\"env:K\", ****]\n\
             [teams.a.channels.w]\nsecret = **\nurl = \"https://x\"\n"
        );
    }

    #[test]
    fn hides_the_value_of_a_serde_message() {
        assert_eq!(
            hide_value("invalid type: integer `123`, expected a string"),
            "invalid secret value (not shown), expected a string"
        );
        assert_eq!(hide_value("bad"), "invalid secret value (not shown)");
    }
}
