//! One direction of a proxied connection: read from one socket, apply toxics, write to the
//! other.
//!
//! Without an active toxic the link copies bytes straight through a buffer that exists only
//! while data is flowing, so ten thousand idle connections cost no buffers at all; a bulk
//! flow moves to `splice(2)` through a pipe of its own (`super::splice`), with no copy in
//! userspace. With
//! toxics, chunks are scheduled by [`LinkToxics`] and written when due while reading goes on.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::toxics::{Chain, ChangeOutcome, CloseKind, Item, LinkToxics};

/// Largest read, like Toxiproxy's chunks when toxics apply; bigger for plain copies.
const TOXIC_CHUNK: usize = 32 * 1024;
const COPY_BUFFER: usize = 64 * 1024;
/// Reads that fill less than half of the read buffer are copied out of it, so a queued
/// chunk never keeps more than twice its size alive. The queue is charged the buffer each
/// chunk keeps (`LinkToxics::on_chunk_in`) and the link reads while
/// `LinkToxics::accepts_more` (2 MiB and 1,024 entries per direction).
const COPY_BELOW: usize = TOXIC_CHUNK / 2;

/// How one direction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkEnd {
    /// The source finished cleanly; the destination was half-closed.
    Eof,
    /// A toxic or an I/O error ends the whole connection.
    Close(CloseKind),
}

/// Byte counters of one direction, shared with the metrics endpoint.
#[derive(Debug, Default)]
pub struct DirectionStats {
    /// Bytes read from the source socket.
    pub received: AtomicU64,
    /// Bytes written to the destination socket.
    pub sent: AtomicU64,
}

/// Everything one link needs.
pub(crate) struct Link<'a> {
    pub(crate) src: &'a TcpStream,
    pub(crate) dst: &'a TcpStream,
    pub(crate) chain: watch::Receiver<Arc<Chain>>,
    pub(crate) toxics: LinkToxics,
    pub(crate) stats: &'a DirectionStats,
    /// Created on the first bulk burst; `None` also where pipes cannot be made.
    pub(crate) splice: Option<super::splice::SplicePipe>,
}

impl Link<'_> {
    /// Runs the link until its stream ends or a toxic closes the connection.
    pub(crate) async fn run(mut self) -> LinkEnd {
        match self.pump().await {
            Ok(end) => end,
            Err(_) => LinkEnd::Close(CloseKind::Close),
        }
    }

    async fn pump(&mut self) -> io::Result<LinkEnd> {
        let mut source_done = false;
        loop {
            if self.toxics.is_passthrough() && !source_done {
                // Fast path: wait for data or a chain change, then copy what is there.
                tokio::select! {
                    biased;
                    changed = self.chain.changed() => {
                        if changed.is_err() { return Ok(LinkEnd::Close(CloseKind::Close)); }
                        if self.adopt_chain() == ChangeOutcome::Close {
                            return Ok(LinkEnd::Close(CloseKind::Close));
                        }
                    }
                    ready = self.src.readable() => {
                        ready?;
                        if self.copy_ready().await? {
                            source_done = true;
                            self.toxics.on_eof(Instant::now());
                        }
                    }
                }
                continue;
            }
            // Toxic path: write what is due, then wait for the next event.
            let now = Instant::now();
            if self.toxics.expired(now) {
                return Ok(LinkEnd::Close(CloseKind::Close));
            }
            while let Some(item) = self.toxics.pop_due(now) {
                match item {
                    Item::Data(bytes) => {
                        write_all(self.dst, &bytes).await?;
                        self.stats
                            .sent
                            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    }
                    Item::Eof => {
                        half_close(self.dst);
                        return Ok(LinkEnd::Eof);
                    }
                    Item::Close { kind, .. } => return Ok(LinkEnd::Close(kind)),
                }
            }
            let can_read = !source_done && self.toxics.accepts_more();
            let deadline = self.toxics.next_deadline();
            tokio::select! {
                biased;
                changed = self.chain.changed() => {
                    if changed.is_err() { return Ok(LinkEnd::Close(CloseKind::Close)); }
                    if self.adopt_chain() == ChangeOutcome::Close {
                        return Ok(LinkEnd::Close(CloseKind::Close));
                    }
                }
                () = sleep_until_opt(deadline) => {}
                ready = self.src.readable(), if can_read => {
                    ready?;
                    if self.read_chunk()? {
                        source_done = true;
                        self.toxics.on_eof(Instant::now());
                    }
                }
            }
        }
    }

    fn adopt_chain(&mut self) -> ChangeOutcome {
        let chain = self.chain.borrow_and_update().clone();
        self.toxics.on_chain_change(&chain, Instant::now())
    }

    /// Copies everything readable now; returns true at end of stream.
    async fn copy_ready(&mut self) -> io::Result<bool> {
        // Allocated per burst and dropped when the socket runs dry: idle links hold no buffer.
        let mut buf = BytesMut::with_capacity(COPY_BUFFER);
        loop {
            buf.clear();
            match self.src.try_read_buf(&mut buf) {
                Ok(0) => return Ok(true),
                Ok(n) => {
                    self.stats.received.fetch_add(n as u64, Ordering::Relaxed);
                    write_all(self.dst, &buf).await?;
                    self.stats.sent.fetch_add(n as u64, Ordering::Relaxed);
                    tokio::task::coop::consume_budget().await;
                    if n < COPY_BUFFER {
                        // Likely drained; go back to waiting (a toxic may have arrived).
                        return Ok(false);
                    }
                    if self.chain.has_changed().unwrap_or(true) {
                        return Ok(false);
                    }
                    // A full buffer: a bulk flow. Let the kernel move it.
                    if self.splice.is_none() {
                        self.splice = super::splice::SplicePipe::new().ok();
                    }
                    if let Some(pipe) = &self.splice {
                        let chain = &self.chain;
                        return pipe
                            .burst(self.src, self.dst, self.stats, || {
                                chain.has_changed().unwrap_or(true)
                            })
                            .await;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads one chunk into the toxic pipeline; returns true at end of stream.
    fn read_chunk(&mut self) -> io::Result<bool> {
        let mut buf = BytesMut::with_capacity(TOXIC_CHUNK);
        match self.src.try_read_buf(&mut buf) {
            Ok(0) => Ok(true),
            Ok(n) => {
                self.stats.received.fetch_add(n as u64, Ordering::Relaxed);
                if n < COPY_BELOW {
                    self.toxics
                        .on_chunk(Bytes::copy_from_slice(&buf), Instant::now());
                } else {
                    let capacity = buf.capacity();
                    self.toxics
                        .on_chunk_in(buf.freeze(), capacity, Instant::now());
                }
                Ok(false)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(at) => crate::precise::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Writes all of `buf` to a socket shared by reference between the two links.
pub(crate) async fn write_all(dst: &TcpStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match dst.try_write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => dst.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Ends our writing side of `dst`, keeping the other direction open (TCP half-close).
pub(crate) fn half_close(dst: &TcpStream) {
    let _ = socket2::SockRef::from(dst).shutdown(std::net::Shutdown::Write);
}
