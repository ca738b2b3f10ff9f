//! Zero-copy pass-through for toxic-free links: bytes go socket → pipe → socket inside the
//! kernel (`splice(2)`), never through a userspace buffer.
//!
//! A link switches to it only for bulk flows (a read that filled the whole copy buffer), so
//! small request/response traffic keeps the cheaper read/write path and idle links hold no
//! pipe. Every burst leaves the pipe empty before it returns, so a toxic added meanwhile
//! takes over at a byte boundary with nothing lost or reordered.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;

use rustix::pipe::{PipeFlags, SpliceFlags, fcntl_setpipe_size, pipe_with, splice};
use tokio::io::Interest;
use tokio::net::TcpStream;

use super::pipe::DirectionStats;

/// Pipe capacity asked for (the kernel may grant less; 64 KiB is the floor).
const PIPE_SIZE: usize = 256 * 1024;

/// A pipe pair owned by one direction of one connection.
pub(crate) struct SplicePipe {
    read: OwnedFd,
    write: OwnedFd,
    size: usize,
}

impl SplicePipe {
    /// A non-blocking pipe, as large as the kernel allows up to [`PIPE_SIZE`].
    pub(crate) fn new() -> io::Result<Self> {
        let (read, write) = pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC)?;
        let size = fcntl_setpipe_size(&write, PIPE_SIZE).unwrap_or(64 * 1024);
        Ok(SplicePipe { read, write, size })
    }

    /// Moves what `src` has ready to `dst` until `src` runs dry (Ok(false)), ends
    /// (Ok(true)) or `stop` says a chain change must be looked at (Ok(false)). The pipe is
    /// empty whenever this returns.
    pub(crate) async fn burst(
        &self,
        src: &TcpStream,
        dst: &TcpStream,
        stats: &DirectionStats,
        stop: impl Fn() -> bool,
    ) -> io::Result<bool> {
        let flags = SpliceFlags::NONBLOCK | SpliceFlags::MOVE;
        loop {
            let filled = src.try_io(Interest::READABLE, || {
                splice(src, None, &self.write, None, self.size, flags).map_err(io::Error::from)
            });
            let mut left = match filled {
                Ok(0) => return Ok(true),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            };
            stats.received.fetch_add(left as u64, Ordering::Relaxed);
            while left > 0 {
                let drained = dst.try_io(Interest::WRITABLE, || {
                    splice(&self.read, None, dst, None, left, flags).map_err(io::Error::from)
                });
                match drained {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(m) => {
                        left -= m;
                        stats.sent.fetch_add(m as u64, Ordering::Relaxed);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => dst.writable().await?,
                    Err(e) => return Err(e),
                }
            }
            tokio::task::coop::consume_budget().await;
            if stop() {
                return Ok(false);
            }
        }
    }
}
