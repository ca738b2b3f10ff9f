//! A proxy's TCP toxics as an I/O layer: a client socket wrapped so that what is read from
//! it passes the upstream chain and what is written to it passes the downstream chain.
//!
//! HTTP proxies serve hyper on this layer, so a TCP toxic applies to an HTTP connection
//! exactly as it does to a TCP link: the same engine ([`LinkToxics`]), both directions, and
//! a toxic added while a keep-alive connection is open acts on that connection's next bytes.
//! Without an active toxic every call goes straight to the socket (vectored writes
//! included); the only extra cost is an atomic version check of each chain.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio::time::Instant;
use tokio_util::sync::ReusableBoxFuture;

use crate::tcp::ProxyStats;
use crate::tcp::pipe::DirectionStats;
use crate::toxics::{Chain, ChangeOutcome, CloseKind, Item, LinkToxics};

/// Largest read taken into the toxic pipeline at once (as TCP links do).
const TOXIC_CHUNK: usize = 32 * 1024;
/// Reads smaller than this are copied out so queued chunks keep no oversized buffer.
const COPY_SMALL: usize = 16 * 1024;

type ChangeFuture = ReusableBoxFuture<'static, watch::Receiver<Arc<Chain>>>;
/// A precise sleep until an instant, boxed so a side can keep it across polls.
type Timer = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Waits for the next change of a chain without holding a borrow of the receiver.
async fn next_change(mut rx: watch::Receiver<Arc<Chain>>) -> watch::Receiver<Arc<Chain>> {
    if rx.changed().await.is_err() {
        // The proxy is gone; its cancellation ends the connection. Never wake again.
        std::future::pending::<()>().await;
    }
    rx
}

/// One direction: its chain, the engine's state, and what is due but not yet handed over.
struct Side {
    rx: watch::Receiver<Arc<Chain>>,
    /// Armed only while the side waits, so a busy connection never registers a waiter.
    change: Option<ChangeFuture>,
    /// Whether `change` waits on the current version (false: re-arm before polling).
    armed: bool,
    toxics: LinkToxics,
    timer: Option<(Instant, Timer)>,
    /// Bytes due and popped from the queue, not yet given to the reader / the socket.
    current: Option<Bytes>,
    /// The source of this side ended (EOF read from the client, or shutdown by hyper).
    source_done: bool,
    /// This side delivered its end (EOF to the reader, shutdown of the socket).
    ended: bool,
}

impl Side {
    fn new(mut rx: watch::Receiver<Arc<Chain>>, seed: u64) -> Self {
        let chain = rx.borrow_and_update().clone();
        Side {
            rx,
            change: None,
            armed: false,
            toxics: LinkToxics::new(&chain, Instant::now(), SmallRng::seed_from_u64(seed)),
            timer: None,
            current: None,
            source_done: false,
            ended: false,
        }
    }

    /// Adopts a new chain if one was published; `Err` when the change closes the link.
    fn adopt_changes(&mut self, reset: &AtomicBool) -> io::Result<()> {
        if !self.rx.has_changed().unwrap_or(false) {
            return Ok(());
        }
        let chain = self.rx.borrow_and_update().clone();
        if chain.wants_reset_on_close() {
            reset.store(true, Ordering::Relaxed);
        }
        match self.toxics.on_chain_change(&chain, Instant::now()) {
            ChangeOutcome::Continue => Ok(()),
            ChangeOutcome::Close => Err(closed_by_toxic()),
        }
    }

    /// Registers for a wake-up on the next chain change (called before returning Pending).
    /// Returns true if a change is already there, so the caller should loop instead.
    fn watch_changes(&mut self, cx: &mut Context<'_>) -> bool {
        let change = match &mut self.change {
            Some(c) => {
                if !self.armed {
                    c.set(next_change(self.rx.clone()));
                }
                c
            }
            None => self
                .change
                .insert(ReusableBoxFuture::new(next_change(self.rx.clone()))),
        };
        self.armed = true;
        match change.poll(cx) {
            Poll::Ready(_clone) => {
                // Our own receiver still sees the change: the caller adopts it.
                self.armed = false;
                true
            }
            Poll::Pending => false,
        }
    }

    /// Whether the engine passes bytes straight through and nothing waits.
    fn passthrough(&self) -> bool {
        self.current.is_none() && self.toxics.is_passthrough() && !self.source_done
    }

    /// Arms the timer for the engine's next deadline; Ready when it has already passed.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(at) = self.toxics.next_deadline() else {
            self.timer = None;
            return Poll::Pending;
        };
        if at <= Instant::now() {
            return Poll::Ready(());
        }
        let timer = match &mut self.timer {
            Some((armed, timer)) if *armed == at => timer,
            slot => {
                let (_, timer) = slot.insert((at, Box::pin(crate::precise::sleep_until(at))));
                timer
            }
        };
        ready!(timer.as_mut().poll(cx));
        self.timer = None;
        Poll::Ready(())
    }
}

fn closed_by_toxic() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "connection closed by a toxic",
    )
}

fn reset_by_toxic() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionReset,
        "connection reset by a toxic",
    )
}

/// A client connection under its proxy's TCP toxics. Reads are the upstream direction
/// (client → proxy), writes the downstream direction (proxy → client).
pub(crate) struct ToxicIo {
    socket: TcpStream,
    read: Side,
    write: Side,
    stats: Arc<ProxyStats>,
    /// Set by a `reset_peer` toxic, a reset close, or an abort fault: the socket is closed
    /// with a TCP reset instead of a FIN.
    reset: Arc<AtomicBool>,
    /// The proxy's connection slot, held as long as the socket is open: an upgraded tunnel
    /// or a forward proxy's CONNECT outlives hyper's connection but still counts against
    /// `max_connections` (and `connections_active`) until the socket closes.
    _slot: OwnedSemaphorePermit,
}

impl ToxicIo {
    /// Wraps an accepted client holding `slot`; `seed` drives the toxicity rolls of both
    /// directions. Counts the connection as active until the socket is dropped.
    pub(crate) fn new(
        socket: TcpStream,
        (up, down): (watch::Receiver<Arc<Chain>>, watch::Receiver<Arc<Chain>>),
        stats: Arc<ProxyStats>,
        seed: u64,
        slot: OwnedSemaphorePermit,
    ) -> Self {
        stats.connections_total.fetch_add(1, Ordering::Relaxed);
        stats.connections_active.fetch_add(1, Ordering::Relaxed);
        let read = Side::new(up, seed);
        let write = Side::new(down, !seed);
        let reset = Arc::new(AtomicBool::new(false));
        if read.rx.borrow().wants_reset_on_close() || write.rx.borrow().wants_reset_on_close() {
            reset.store(true, Ordering::Relaxed);
        }
        ToxicIo {
            socket,
            read,
            write,
            stats,
            reset,
            _slot: slot,
        }
    }

    /// A handle that makes the socket close with a reset when the connection ends.
    pub(crate) fn reset_handle(&self) -> Arc<AtomicBool> {
        self.reset.clone()
    }

    fn fail(&self, kind: CloseKind) -> io::Error {
        if kind == CloseKind::Reset {
            self.reset.store(true, Ordering::Relaxed);
            reset_by_toxic()
        } else {
            closed_by_toxic()
        }
    }

    /// Moves due items of the write side to the socket; Ready(Ok) once nothing due is left.
    fn drive_writes(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if let Some(bytes) = &mut self.write.current {
                let n = ready!(Pin::new(&mut self.socket).poll_write(cx, bytes))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                count(&self.stats.downstream.sent, n);
                let _ = bytes.split_to(n);
                if bytes.is_empty() {
                    self.write.current = None;
                }
                continue;
            }
            let now = Instant::now();
            if self.write.toxics.expired(now) {
                return Poll::Ready(Err(closed_by_toxic()));
            }
            match self.write.toxics.pop_due(now) {
                Some(Item::Data(bytes)) => self.write.current = Some(bytes),
                Some(Item::Eof) => {
                    ready!(Pin::new(&mut self.socket).poll_shutdown(cx))?;
                    self.write.ended = true;
                }
                Some(Item::Close { kind, .. }) => return Poll::Ready(Err(self.fail(kind))),
                None => return Poll::Ready(Ok(())),
            }
        }
    }

    /// Drives the write side until its queue is empty (flush) or its end is written.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            self.write.adopt_changes(&self.reset)?;
            ready!(self.drive_writes(cx))?;
            if self.write.ended || self.write.toxics.queue_is_empty() {
                return Poll::Ready(Ok(()));
            }
            // Something is queued but not due yet.
            if self.write.watch_changes(cx) {
                continue;
            }
            ready!(self.write.poll_deadline(cx));
        }
    }

    fn accept_write(&mut self, data: Bytes) {
        count(&self.stats.downstream.received, data.len());
        self.write.toxics.on_chunk(data, Instant::now());
    }

    /// The toxic path of a write: queue what hyper gives once the queue has room.
    fn poll_write_toxic(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.drive_writes(cx))?;
        if self.write.ended {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if !self.write.toxics.accepts_more() {
            // Wait for the queue to drain: the deadline of its front item, or a change.
            loop {
                if !self.write.watch_changes(cx) {
                    ready!(self.write.poll_deadline(cx));
                }
                self.write.adopt_changes(&self.reset)?;
                ready!(self.drive_writes(cx))?;
                if self.write.toxics.accepts_more() {
                    break;
                }
            }
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let mut data = BytesMut::with_capacity(total);
        for b in bufs {
            data.extend_from_slice(b);
        }
        self.accept_write(data.freeze());
        // Items due at once (a toxic that delays nothing) leave now; errors wait for flush.
        let _ = self.drive_writes(cx);
        Poll::Ready(Ok(total))
    }
}

fn count(counter: &std::sync::atomic::AtomicU64, n: usize) {
    counter.fetch_add(n as u64, Ordering::Relaxed);
}

fn stats_both(stats: &DirectionStats, n: usize) {
    count(&stats.received, n);
    count(&stats.sent, n);
}

impl Drop for ToxicIo {
    fn drop(&mut self) {
        self.stats
            .connections_active
            .fetch_sub(1, Ordering::Relaxed);
        if self.reset.load(Ordering::Relaxed) {
            let _ = socket2::SockRef::from(&self.socket).set_linger(Some(Duration::ZERO));
        }
    }
}

impl AsyncRead for ToxicIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            this.read.adopt_changes(&this.reset)?;
            if this.read.ended {
                return Poll::Ready(Ok(()));
            }
            if let Some(bytes) = &mut this.read.current {
                let n = bytes.len().min(buf.remaining());
                buf.put_slice(&bytes.split_to(n));
                if bytes.is_empty() {
                    this.read.current = None;
                }
                count(&this.stats.upstream.sent, n);
                return Poll::Ready(Ok(()));
            }
            if this.read.passthrough() {
                let before = buf.filled().len();
                match Pin::new(&mut this.socket).poll_read(cx, buf) {
                    Poll::Ready(Ok(())) => {
                        let n = buf.filled().len() - before;
                        if n == 0 {
                            this.read.source_done = true;
                            this.read.ended = true;
                        }
                        stats_both(&this.stats.upstream, n);
                        return Poll::Ready(Ok(()));
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        if this.read.watch_changes(cx) {
                            continue;
                        }
                        return Poll::Pending;
                    }
                }
            }
            // The toxic path: hand over what is due, read more while the queue has room.
            let now = Instant::now();
            if this.read.toxics.expired(now) {
                return Poll::Ready(Err(closed_by_toxic()));
            }
            match this.read.toxics.pop_due(now) {
                Some(Item::Data(bytes)) => {
                    this.read.current = Some(bytes);
                    continue;
                }
                Some(Item::Eof) => {
                    this.read.ended = true;
                    return Poll::Ready(Ok(()));
                }
                Some(Item::Close { kind, .. }) => return Poll::Ready(Err(this.fail(kind))),
                None => {}
            }
            if !this.read.source_done && this.read.toxics.accepts_more() {
                let mut chunk = BytesMut::with_capacity(TOXIC_CHUNK);
                match tokio_util::io::poll_read_buf(Pin::new(&mut this.socket), cx, &mut chunk) {
                    Poll::Ready(Ok(0)) => {
                        this.read.source_done = true;
                        this.read.toxics.on_eof(Instant::now());
                        continue;
                    }
                    Poll::Ready(Ok(n)) => {
                        count(&this.stats.upstream.received, n);
                        // The queue is charged what the buffer holds, not what it carries.
                        let (chunk, capacity) = if n < COPY_SMALL {
                            (Bytes::copy_from_slice(&chunk), n)
                        } else {
                            let capacity = chunk.capacity();
                            (chunk.freeze(), capacity)
                        };
                        this.read
                            .toxics
                            .on_chunk_in(chunk, capacity, Instant::now());
                        continue;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {}
                }
            }
            if this.read.watch_changes(cx) {
                continue;
            }
            ready!(this.read.poll_deadline(cx));
        }
    }
}

impl AsyncWrite for ToxicIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(data)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.write.adopt_changes(&this.reset)?;
        if this.write.passthrough() {
            let n = ready!(Pin::new(&mut this.socket).poll_write_vectored(cx, bufs))?;
            stats_both(&this.stats.downstream, n);
            return Poll::Ready(Ok(n));
        }
        this.poll_write_toxic(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.socket).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.write.adopt_changes(&this.reset)?;
        if this.write.ended {
            return Poll::Ready(Ok(()));
        }
        if this.write.passthrough() {
            ready!(Pin::new(&mut this.socket).poll_shutdown(cx))?;
            this.write.ended = true;
            return Poll::Ready(Ok(()));
        }
        if !this.write.source_done {
            this.write.source_done = true;
            this.write.toxics.on_eof(Instant::now());
        }
        ready!(this.poll_drain(cx))?;
        if !this.write.ended {
            // The end is queued behind data that is not due yet: poll_drain armed the timer.
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }
}
