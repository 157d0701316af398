//! End-to-end tests: the real `herald` binary against real files and servers on 127.0.0.1.
//!
//! One test binary for everything (link time on two cores adds up); each module is one area.

mod api;
mod backup;
mod bounded;
mod browser;
mod channel_failures;
mod channels;
mod cli;
mod client;
mod cluster;
mod delivery;
mod delivery_core;
mod grouping;
mod harness;
mod noise;
mod operations;
mod plugins;
mod process;
mod redis;
mod reload;
mod retention;
mod sdk;
mod stream;
mod support;
mod telegram;
