//! The first TLS record of a connection, read before any TLS library sees it: so that a
//! TLS fault can answer it (an alert, or silence) and the faults can match on the name the
//! client asked for (SNI); the bytes are then replayed to rustls through [`Prefixed`].

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// Largest record payload a TLS 1.2/1.3 peer may send (2^14 plus expansion room).
const MAX_RECORD: usize = 16_384 + 2_048;

/// Reads one TLS record (header and payload); errors if it is not a handshake record.
pub(crate) async fn read_record<R: AsyncRead + Unpin>(io: &mut R) -> io::Result<Vec<u8>> {
    let mut header = [0u8; 5];
    io.read_exact(&mut header).await?;
    if header[0] != 22 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a TLS handshake (plain HTTP to an HTTPS port?)",
        ));
    }
    let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
    if len > MAX_RECORD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "TLS record too long",
        ));
    }
    let mut record = Vec::with_capacity(5 + len);
    record.extend_from_slice(&header);
    record.resize(5 + len, 0);
    io.read_exact(&mut record[5..]).await?;
    Ok(record)
}

/// Cursor over a byte slice with bounds-checked reads.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| usize::from(b[0]))
    }

    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
}

/// The server name (SNI) a ClientHello record asks for, lower case.
pub(crate) fn server_name(record: &[u8]) -> Option<String> {
    let mut c = Cursor(record.get(5..)?);
    if c.u8()? != 1 {
        return None; // not a ClientHello
    }
    c.take(3)?; // handshake length
    c.take(2 + 32)?; // version, random
    let session = c.u8()?;
    c.take(session)?;
    let suites = c.u16()?;
    c.take(suites)?;
    let compression = c.u8()?;
    c.take(compression)?;
    let ext_len = c.u16()?;
    let mut ext = Cursor(c.take(ext_len)?);
    while let (Some(kind), Some(len)) = (ext.u16(), ext.u16()) {
        let body = ext.take(len)?;
        if kind != 0 {
            continue;
        }
        let mut names = Cursor(body);
        let list = names.u16()?;
        let mut list = Cursor(names.take(list)?);
        while let Some(name_type) = list.u8() {
            let n = list.u16()?;
            let name = list.take(n)?;
            if name_type == 0 {
                return std::str::from_utf8(name).ok().map(str::to_ascii_lowercase);
            }
        }
    }
    None
}

/// A fatal alert record with `code`.
pub(crate) fn alert(code: u8) -> [u8; 7] {
    [21, 3, 3, 0, 2, 2, code]
}

/// An I/O object whose first reads return `prefix` (bytes already taken from it).
pub(crate) struct Prefixed<T> {
    prefix: Vec<u8>,
    at: usize,
    inner: T,
}

impl<T> Prefixed<T> {
    pub(crate) fn new(prefix: Vec<u8>, inner: T) -> Self {
        Prefixed {
            prefix,
            at: 0,
            inner,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.at < self.prefix.len() {
            let n = (self.prefix.len() - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.prefix[at..at + n]);
            self.at += n;
            if self.at == self.prefix.len() {
                self.prefix = Vec::new();
                self.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
