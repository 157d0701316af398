//! Log lines a plugin sends to herald: shown by `herald plugin test` and in herald's log.
//!
//! herald keeps at most 64 lines of at most 1 KiB per render and drops the rest.

use crate::bindings::herald::formatter::log::{Level, log};

pub fn debug(message: &str) {
    log(Level::Debug, message);
}

pub fn info(message: &str) {
    log(Level::Info, message);
}

pub fn warn(message: &str) {
    log(Level::Warn, message);
}

pub fn error(message: &str) {
    log(Level::Error, message);
}
