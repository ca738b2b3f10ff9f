//! The data plane of downtime: TCP proxies and the toxic engine, with no HTTP API, SQL or
//! HTML types in sight.
//!
//! # Layout
//! - [`registry`]: the public handle; the only way to create, change or stop proxies;
//! - `listener`: binding and the accept loop, one task per proxy;
//! - `tcp`: one task per connection, two links (client→upstream, upstream→client);
//! - [`toxics`]: what toxics do to a link's chunks, as pure, time-driven state machines;
//! - [`tls`]: the local CA, TLS termination on HTTP proxies, TLS to `https://` upstreams;
//! - `toxic_io`: the TCP toxics of a connection as an I/O layer, beneath hyper;
//! - [`http`]: HTTP proxies: hyper per connection, HTTP faults per request, the journal;
//! - `precise`: sub-millisecond sleeps for latency toxics and faults.
//!
//! Dependencies point down this list: toxics never see sockets, the registry never waits on
//! a connection task.

pub mod http;
mod listener;
mod precise;
pub mod registry;
mod tcp;
pub mod tls;
mod toxic_io;
pub mod toxics;

pub use http::HttpCounters;
pub use registry::{PopulateError, ProxyCounters, Registry, ToxicExpired};
pub use tcp::ProxyStats;
pub use tcp::pipe::DirectionStats;
