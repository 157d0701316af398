//! Event-type patterns used by subscriptions and stream filters.
//!
//! Three forms: an exact type (`host.down`), a prefix wildcard (`capsule.*`: every type
//! that starts with `capsule.`), and `*` (every durable type).

use std::fmt;

use crate::event::check_event_type;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Pattern {
    /// `*`: every type.
    All,
    /// `capsule.*`, stored with its trailing dot (`capsule.`).
    Prefix(String),
    /// `host.down`.
    Exact(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid pattern `{pattern}`: {reason}")]
pub struct PatternError {
    pub pattern: String,
    pub reason: String,
}

impl Pattern {
    pub fn parse(s: &str) -> Result<Pattern, PatternError> {
        let fail = |reason: &str| PatternError {
            pattern: s.to_string(),
            reason: reason.to_string(),
        };
        if s.is_empty() {
            return Err(fail("a pattern must not be empty; use `*` for every type"));
        }
        if s == "*" {
            return Ok(Pattern::All);
        }
        if let Some(prefix) = s.strip_suffix(".*") {
            if prefix.contains('*') {
                return Err(fail(
                    "`*` may only stand as the last segment, as in `capsule.*`",
                ));
            }
            check_event_type(prefix).map_err(|r| fail(&r))?;
            return Ok(Pattern::Prefix(format!("{prefix}.")));
        }
        if s.contains('*') {
            return Err(fail(
                "`*` must be a whole segment and the last one: `*`, or `capsule.*`",
            ));
        }
        check_event_type(s).map_err(|r| fail(&r))?;
        Ok(Pattern::Exact(s.to_string()))
    }

    pub fn matches(&self, event_type: &str) -> bool {
        match self {
            Pattern::All => true,
            Pattern::Prefix(prefix) => event_type.starts_with(prefix.as_str()),
            Pattern::Exact(name) => name == event_type,
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::All => f.write_str("*"),
            Pattern::Prefix(prefix) => write!(f, "{prefix}*"),
            Pattern::Exact(name) => f.write_str(name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expect: &str) {
        let got = match Pattern::parse(input) {
            Ok(p) => format!("{p:?}"),
            Err(e) => e.to_string(),
        };
        assert_eq!(got, expect, "pattern {input:?}");
    }

    #[test]
    fn parses() {
        check("*", "All");
        check("capsule.*", r#"Prefix("capsule.")"#);
        check("a.b.*", r#"Prefix("a.b.")"#);
        check("host.down", r#"Exact("host.down")"#);
        check(
            "",
            "invalid pattern ``: a pattern must not be empty; use `*` for every type",
        );
        check(
            "**",
            "invalid pattern `**`: `*` must be a whole segment and the last one: `*`, or `capsule.*`",
        );
        check(
            "capsule.*.x",
            "invalid pattern `capsule.*.x`: `*` must be a whole segment and the last one: `*`, or `capsule.*`",
        );
        check(
            "*.create",
            "invalid pattern `*.create`: `*` must be a whole segment and the last one: `*`, or `capsule.*`",
        );
        check(
            "caps*",
            "invalid pattern `caps*`: `*` must be a whole segment and the last one: `*`, or `capsule.*`",
        );
        check(
            "*.*",
            "invalid pattern `*.*`: `*` may only stand as the last segment, as in `capsule.*`",
        );
        check(".*", "invalid pattern `.*`: event type must not be empty");
        check(
            "a..*",
            "invalid pattern `a..*`: event type `a.` has an empty segment",
        );
        check(
            "host down",
            "invalid pattern `host down`: event type `host down` contains ' '; use letters, digits, `_`, `-` and `.`",
        );
    }

    #[test]
    fn prefix_matches_only_at_segment_boundaries() {
        let p = Pattern::parse("capsule.*").unwrap();
        assert!(p.matches("capsule.create"));
        assert!(p.matches("capsule.state.changed"));
        assert!(!p.matches("capsule"));
        assert!(!p.matches("capsules.create"));
        assert!(!p.matches("host.down"));
    }

    #[test]
    fn display_round_trips() {
        for s in ["*", "capsule.*", "host.down", "a.b.*"] {
            assert_eq!(Pattern::parse(s).unwrap().to_string(), s);
        }
    }
}
