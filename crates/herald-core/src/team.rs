//! Team identifiers: the tenancy boundary of herald.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Longest accepted team id, in bytes.
pub const MAX_TEAM_ID_LEN: usize = 64;

/// A validated team id: 1–64 characters of `A-Z a-z 0-9 _ -`.
///
/// Cheap to clone (shared string), because every event and subscription carries one.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TeamId(Arc<str>);

impl TeamId {
    pub fn parse(s: &str) -> Result<TeamId, String> {
        if s.is_empty() {
            return Err("team id must not be empty".into());
        }
        if s.len() > MAX_TEAM_ID_LEN {
            return Err(format!(
                "team id is longer than {MAX_TEAM_ID_LEN} characters"
            ));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
        {
            return Err(format!(
                "team id `{s}` contains {c:?}; use letters, digits, `_` and `-`"
            ));
        }
        Ok(TeamId(Arc::from(s)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Serialize for TeamId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TeamId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        TeamId::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for TeamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TeamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TeamId({})", self.0)
    }
}

impl std::borrow::Borrow<str> for TeamId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_rejects() {
        for ok in ["acme", "globex-2", "A_b", &"x".repeat(64)] {
            assert!(TeamId::parse(ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("", "must not be empty"),
            ("ac me", "contains ' '"),
            ("acme.eu", "contains '.'"),
            (&"x".repeat(65), "longer than 64"),
        ] {
            let err = TeamId::parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
