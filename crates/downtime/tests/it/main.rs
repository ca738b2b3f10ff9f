//! One integration-test binary for `downtime` (each test file used to link its own).
//!
//! The `downtime` binary as users run it: the CLI, drills, and the real Toxiproxy client libraries against `downtime serve`.

#![allow(
    clippy::unwrap_used,
    reason = "a failed unwrap is a clear test failure"
)]

mod cli;
mod cli_http;
mod cli_incidents;
mod cli_status_listen;
mod compat_clients;
mod drills;
mod support;
mod toxiproxy_rust_client;
