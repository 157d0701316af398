//! The limits every render runs under, and their defaults.

use std::time::Duration;

/// Largest `body` a plugin may return, in bytes.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// Largest `subject`, in bytes: the line length limit of RFC 5322.
pub const MAX_SUBJECT_BYTES: usize = 998;
/// Largest `text-alternative`, in bytes.
pub const MAX_TEXT_ALTERNATIVE_BYTES: usize = 256 * 1024;
/// Most log lines kept per render; further lines are counted and dropped.
pub const MAX_LOG_LINES: usize = 64;
/// Longest log line kept, in bytes; longer lines are cut.
pub const MAX_LOG_LINE_BYTES: usize = 1024;
/// Longest skip reason or plugin error text kept, in bytes.
pub(crate) const MAX_REASON_BYTES: usize = 1024;

/// Per-plugin limits (`[plugins.NAME] timeout` and `memory_limit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock time one render may take, instantiation included.
    pub timeout: Duration,
    /// Most linear memory one instance may have, in bytes.
    pub memory: u64,
}

impl Limits {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);
    pub const DEFAULT_MEMORY: u64 = 16 * 1024 * 1024;
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            timeout: Limits::DEFAULT_TIMEOUT,
            memory: Limits::DEFAULT_MEMORY,
        }
    }
}

/// `50ms`, `2s`, `1500ms`.
pub(crate) fn fmt_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}µs", d.as_micros())
    }
}

/// `16 MiB`, `512 KiB`, `1000 bytes`.
pub(crate) fn fmt_bytes(n: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * 1024;
    if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else if n >= KIB && n.is_multiple_of(KIB) {
        format!("{} KiB", n / KIB)
    } else {
        format!("{n} bytes")
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub(crate) fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
