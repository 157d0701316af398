//! herald-testkit: what herald's tests talk to when the real thing cannot run offline
//! (a faithful Telegram Bot API double) or must be started per test (an SMTP server).
//! Used by the channel tests and the end-to-end tests; never by herald itself.

pub mod smtp;
pub mod telegram;
