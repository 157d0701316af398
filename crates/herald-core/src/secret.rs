//! A secret value (API key, token, signing secret) that never prints and never serialises.

use std::fmt;

/// A secret string. `Debug` and `Display` print `[redacted]`; there is deliberately no
/// `Serialize` implementation, so a secret cannot end up in an API response or a log line
/// by accident. Use [`Secret::expose`] at the single place the raw value is needed.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The raw value. Call this only where the secret is used (signing, authenticating).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Compares with `other` in time independent of where the two differ.
    pub fn constant_time_eq(&self, other: &str) -> bool {
        let a = self.0.as_bytes();
        let b = other.as_bytes();
        let mut diff = a.len() ^ b.len();
        for (i, byte) in b.iter().enumerate() {
            diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ byte);
        }
        diff == 0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_its_value() {
        let s = Secret::new("whsec_supersecret");
        assert_eq!(format!("{s}"), "[redacted]");
        assert!(!format!("{s:?}").contains("supersecret"));
    }

    #[test]
    fn constant_time_eq_compares_whole_values() {
        let s = Secret::new("abc");
        assert!(s.constant_time_eq("abc"));
        assert!(!s.constant_time_eq("abd"));
        assert!(!s.constant_time_eq("ab"));
        assert!(!s.constant_time_eq("abcd"));
        assert!(!s.constant_time_eq(""));
    }
}
