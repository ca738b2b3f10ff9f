//! TCP proxying: one task per accepted client, running both directions of the connection.

pub(crate) mod pipe;
mod splice;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::toxics::{Chain, CloseKind, LinkToxics};
use pipe::{DirectionStats, Link, LinkEnd};

/// Live counters of one proxy, read by the metrics endpoint.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Client → upstream bytes.
    pub upstream: DirectionStats,
    /// Upstream → client bytes.
    pub downstream: DirectionStats,
    /// Connections accepted since the proxy was created.
    pub connections_total: AtomicU64,
    /// Connections open right now (both sockets connected).
    pub connections_active: AtomicU64,
    /// Accepts that failed (for example out of file descriptors); the loop backs off.
    pub accept_errors: AtomicU64,
    /// HTTP connections answered 503 and closed because the proxy was at its cap.
    pub refused: AtomicU64,
}

/// What a connection task needs from its proxy.
pub(crate) struct ConnContext {
    pub(crate) upstream: Arc<str>,
    pub(crate) up_chain: watch::Receiver<Arc<Chain>>,
    pub(crate) down_chain: watch::Receiver<Arc<Chain>>,
    pub(crate) stats: Arc<ProxyStats>,
    pub(crate) seed: u64,
    pub(crate) cancel: CancellationToken,
}

struct ActiveGuard<'a>(&'a AtomicU64);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves one accepted client until either side ends it, a toxic closes it, or the proxy
/// stops. Dial failures close the client at once, as Toxiproxy does.
pub(crate) async fn serve(client: TcpStream, mut ctx: ConnContext) {
    ctx.stats.connections_total.fetch_add(1, Ordering::Relaxed);
    let _ = client.set_nodelay(true);
    let upstream = tokio::select! {
        () = ctx.cancel.cancelled() => return,
        dialed = TcpStream::connect(&*ctx.upstream) => match dialed {
            Ok(dialed) => dialed,
            Err(e) => {
                tracing::debug!(upstream = %ctx.upstream, error = %e, "upstream dial failed");
                return;
            }
        },
    };
    let _ = upstream.set_nodelay(true);
    ctx.stats.connections_active.fetch_add(1, Ordering::Relaxed);
    let _active = ActiveGuard(&ctx.stats.connections_active);

    let now = Instant::now();
    let up = ctx.up_chain.borrow_and_update().clone();
    let down = ctx.down_chain.borrow_and_update().clone();
    if up.wants_reset_on_close() || down.wants_reset_on_close() {
        set_reset_on_close(&client);
        set_reset_on_close(&upstream);
    }
    let up_link = Link {
        src: &client,
        dst: &upstream,
        chain: ctx.up_chain.clone(),
        toxics: LinkToxics::new(&up, now, SmallRng::seed_from_u64(ctx.seed)),
        stats: &ctx.stats.upstream,
        splice: None,
    };
    let down_link = Link {
        src: &upstream,
        dst: &client,
        chain: ctx.down_chain.clone(),
        toxics: LinkToxics::new(&down, now, SmallRng::seed_from_u64(!ctx.seed)),
        stats: &ctx.stats.downstream,
        splice: None,
    };
    let both = async {
        let a = up_link.run();
        let b = down_link.run();
        tokio::pin!(a, b);
        let (mut a_done, mut b_done) = (false, false);
        loop {
            let end = tokio::select! {
                end = &mut a, if !a_done => { a_done = true; end }
                end = &mut b, if !b_done => { b_done = true; end }
            };
            if let LinkEnd::Close(kind) = end {
                return kind;
            }
            if a_done && b_done {
                return CloseKind::Close;
            }
        }
    };
    let end = tokio::select! {
        () = ctx.cancel.cancelled() => CloseKind::Close,
        kind = both => kind,
    };
    if end == CloseKind::Reset {
        set_reset_on_close(&client);
        set_reset_on_close(&upstream);
    }
    // Dropping both streams closes them (with RST when linger is 0).
}

/// SO_LINGER 0: the next close sends a TCP reset instead of a FIN.
fn set_reset_on_close(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}
