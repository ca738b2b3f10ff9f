//! Pure types of downtime: proxies, toxics and the errors users see, with their validation.
//!
//! # Layout
//! - [`proxy`]: a proxy's configuration and the JSON a client sends to create or change one;
//! - [`toxic`]: toxic kinds, their attributes, and the JSON of a toxic;
//! - [`http_fault`]: the HTTP faults an HTTP proxy applies per request;
//! - [`http_options`]: how an HTTP proxy forwards (headers, upstream version, limits);
//! - [`drill`]: drill files (outage scenarios), checked with every problem's line;
//! - [`substitute`]: `${VAR}` / `${VAR:-default}` in config and drill files;
//! - [`tls_fault`]: faults of a TLS handshake (expired, wrong-host, untrusted, stalled, alert);
//! - [`tls_options`]: TLS termination of an HTTP proxy (names, or a supplied cert and key);
//! - [`error`]: every refusal with the status code and text Toxiproxy clients expect.
//!
//! This crate has no async runtime and does no I/O, so the data plane, the control plane and
//! the CLI can share it and its validation is tested without sockets.

pub mod drill;
pub mod error;
pub mod http_fault;
pub mod http_options;
pub mod proxy;
pub mod substitute;
pub mod tls_fault;
pub mod tls_options;
pub mod toxic;

pub use error::Error;
pub use proxy::{Protocol, ProxyConfig, ProxyPatch, ProxyRequest, ProxyView};
pub use toxic::{Bounds, Stream, Toxic, ToxicKind, ToxicPatch, ToxicRequest};

/// Version reported by `GET /version`: the Toxiproxy release whose API we reproduce.
pub const TOXIPROXY_API_VERSION: &str = "2.12.0";
