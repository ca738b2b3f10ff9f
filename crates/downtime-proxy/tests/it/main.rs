//! One integration-test binary for `downtime-proxy` (each test file used to link its own).
//!
//! The data plane over real loopback sockets: HTTP path, registry, TLS.

#![allow(
    clippy::unwrap_used,
    reason = "a failed unwrap is a clear test failure"
)]

mod http_path;
mod registry;
mod tls;
