//! Binding a proxy's listen address and its accept loop.
//!
//! The accept loop only accepts and spawns: the upstream dial runs in the connection's own
//! task, so one slow upstream never holds up other clients, and an accept error (such as
//! running out of file descriptors) is logged and retried after a pause instead of ending
//! the proxy.

use std::io;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use downtime_model::Error;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::http::{self, HttpShared};
use crate::tcp::{self, ConnContext, ProxyStats};
use crate::toxic_io::ToxicIo;
use crate::toxics::Chain;

/// Resolves a listen string as Toxiproxy does: empty or `:PORT` means every interface.
pub(crate) async fn resolve_listen(listen: &str) -> Result<SocketAddr, Error> {
    if listen.is_empty() {
        return Ok(SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)));
    }
    if let Some(port) = listen.strip_prefix(':') {
        let port = port
            .parse::<u16>()
            .map_err(|_| Error::Listen(format!("address tcp/{port}: unknown port")))?;
        return Ok(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)));
    }
    if let Ok(addr) = listen.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(listen)
        .await
        .map_err(|e| Error::Listen(format!("listen tcp {listen}: {}", describe(&e))))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| Error::Listen(format!("listen tcp {listen}: no such host")))
}

/// Binds `addr` with SO_REUSEADDR (a proxy re-enabled at once must get its port back).
///
/// Returns a std listener: it is registered with the data-plane runtime by the accept loop
/// that runs there, never with the runtime of the API call that created it.
pub(crate) fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, Error> {
    let bound = (|| {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(1024)?;
        listener.into_std()
    })();
    bound.map_err(|e| Error::Listen(format!("listen tcp {addr}: bind: {}", describe(&e))))
}

/// Registers a listener from [`bind`] with the runtime this runs on.
fn register(listener: std::net::TcpListener) -> Option<TcpListener> {
    match TcpListener::from_std(listener) {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::error!(error = %e, "cannot register a listener");
            None
        }
    }
}

/// An OS error as Go prints it: lowercase, without Rust's "(os error N)" suffix.
fn describe(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::AddrInUse => "address already in use".to_owned(),
        io::ErrorKind::AddrNotAvailable => "cannot assign requested address".to_owned(),
        io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => {
            let text = e.to_string();
            let text = text.split(" (os error").next().unwrap_or(&text).to_owned();
            text.to_lowercase()
        }
    }
}

/// What the accept loop hands to every connection it spawns.
pub(crate) struct AcceptContext {
    pub(crate) name_hash: u64,
    pub(crate) upstream: Arc<str>,
    pub(crate) up_chain: watch::Receiver<Arc<Chain>>,
    pub(crate) down_chain: watch::Receiver<Arc<Chain>>,
    pub(crate) stats: Arc<ProxyStats>,
    pub(crate) sequence: Arc<AtomicU64>,
    pub(crate) seed: u64,
    /// For HTTP proxies: the state every connection shares.
    pub(crate) http: Option<Arc<HttpShared>>,
    /// One permit per connection the proxy may hold open (its `max_connections`).
    pub(crate) slots: Arc<Semaphore>,
    /// Bounds the tasks that answer 503 over the cap, so a flood cannot pile them up.
    pub(crate) refusals: Arc<Semaphore>,
}

/// Refusals of an HTTP proxy being written at once, past which extra connections are just
/// closed.
pub(crate) const MAX_REFUSALS: usize = 64;

/// The body of an HTTP proxy's answer at its connection cap.
const OVERLOADED_BODY: &str = "{\"id\": \"overloaded\", \"message\": \"this downtime proxy is at its max_connections; try again when a connection closes\"}";

/// Answers 503 and closes, giving a slow client at most a second.
async fn refuse_overloaded(mut client: TcpStream) {
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{OVERLOADED_BODY}",
        OVERLOADED_BODY.len()
    );
    let write = async {
        client.write_all(answer.as_bytes()).await?;
        client.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}

/// The pause after a failed accept: doubles from 10 ms up to 1 s while accepts keep
/// failing (for example out of descriptors), so the loop never spins.
fn backoff(failures: u32) -> Duration {
    Duration::from_millis(10u64.saturating_mul(1 << failures.min(7)).min(1000))
}

/// Accepts clients until `cancel` fires; each connection runs in its own tracked task.
pub(crate) async fn accept_loop(
    listener: std::net::TcpListener,
    ctx: AcceptContext,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let Some(listener) = register(listener) else {
        return;
    };
    let mut failures = 0u32;
    loop {
        // A TCP proxy at its cap stops accepting: new clients wait in the backlog.
        let tcp_slot = if ctx.http.is_none() {
            tokio::select! {
                () = cancel.cancelled() => return,
                permit = ctx.slots.clone().acquire_owned() => match permit {
                    Ok(p) => Some(p),
                    Err(_) => return,
                },
            }
        } else {
            None
        };
        let accepted = tokio::select! {
            () = cancel.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((client, peer)) => {
                failures = 0;
                let n = ctx.sequence.fetch_add(1, Ordering::Relaxed);
                let seed = mix(ctx.seed ^ ctx.name_hash, n);
                if let Some(shared) = &ctx.http {
                    let Ok(slot) = ctx.slots.clone().try_acquire_owned() else {
                        ctx.stats.refused.fetch_add(1, Ordering::Relaxed);
                        if let Ok(permit) = ctx.refusals.clone().try_acquire_owned() {
                            tracker.spawn(async move {
                                refuse_overloaded(client).await;
                                drop(permit);
                            });
                        }
                        continue;
                    };
                    // One stack, no hop: the TCP toxics sit beneath hyper on this socket,
                    // which holds the slot until it closes (tunnels included).
                    let _ = client.set_nodelay(true);
                    let io = ToxicIo::new(
                        client,
                        (ctx.up_chain.clone(), ctx.down_chain.clone()),
                        ctx.stats.clone(),
                        seed,
                        slot,
                    );
                    tracker.spawn(http::serve_client(io, peer, shared.clone()));
                    continue;
                }
                let conn = ConnContext {
                    upstream: ctx.upstream.clone(),
                    up_chain: ctx.up_chain.clone(),
                    down_chain: ctx.down_chain.clone(),
                    stats: ctx.stats.clone(),
                    seed,
                    cancel: cancel.clone(),
                };
                tracker.spawn(async move {
                    tcp::serve(client, conn).await;
                    drop(tcp_slot);
                });
            }
            Err(e) => {
                ctx.stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                failures = failures.saturating_add(1);
                let pause = backoff(failures);
                tracing::warn!(error = %e, pause_ms = pause.as_millis() as u64, "accept failed; retrying");
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
}

/// SplitMix64 of `a` and `b`: turns (seed, connection number) into an independent stream.
pub(crate) fn mix(a: u64, b: u64) -> u64 {
    let mut z = a.wrapping_add(b.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
