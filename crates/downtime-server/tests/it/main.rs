//! One integration-test binary for `downtime-server` (each test file used to link its own).
//!
//! The server over real loopback sockets: the control API, HTTP faults, TCP toxics, history, drills, schedules, webhooks and the status page (with a real Chromium).

#![allow(
    clippy::unwrap_used,
    reason = "a failed unwrap is a clear test failure"
)]

mod api;
mod browser;
mod control_plane;
mod drill_runner;
mod history;
mod http_faults;
mod schedules;
mod status_listener;
mod status_page;
mod support;
mod tcp_toxics;
mod webhooks_persist;
