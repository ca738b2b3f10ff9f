//! Bodies that account for a request: the response body that completes its journal entry,
//! and the request body that counts its bytes and watches for a stalled or broken upload.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::body::{BoxError, Cut, ResponseBody};
use super::journal::Journal;

/// Completes a journal entry when its response body ends: the duration to the last byte,
/// the bytes sent, and why it was cut short if it was (an error, or hyper dropping the body
/// because the client went away).
pub struct Recorded {
    inner: ResponseBody,
    journal: Arc<Journal>,
    seq: u64,
    started: Instant,
    bytes_out: u64,
    /// Request body bytes, counted by [`Counted`] as the upstream reads them.
    bytes_in: Arc<AtomicU64>,
    /// The body's announced length: hyper stops polling once it has sent that much, so
    /// reaching it means the body was sent whole.
    expected: Option<u64>,
    done: bool,
}

impl Recorded {
    /// Wraps `inner`, completing entry `seq` of `journal` when it ends; `expected` is the
    /// length announced in the head (0 for answers without a body, such as to `HEAD`).
    pub fn new(
        inner: ResponseBody,
        journal: Arc<Journal>,
        (seq, started): (u64, Instant),
        bytes_in: Arc<AtomicU64>,
        expected: Option<u64>,
    ) -> Self {
        Recorded {
            inner,
            journal,
            seq,
            started,
            bytes_out: 0,
            bytes_in,
            expected,
            done: false,
        }
    }

    fn whole(&self) -> bool {
        self.inner.is_end_stream() || self.expected.is_some_and(|n| self.bytes_out >= n)
    }

    fn complete(&mut self, cut: Option<&'static str>) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let duration = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (bytes_out, bytes_in) = (self.bytes_out, self.bytes_in.load(Ordering::Relaxed));
        self.journal.update(self.seq, |e| {
            e.duration_ms = duration;
            e.bytes_out = bytes_out;
            e.bytes_in = bytes_in;
            e.cut = cut;
        });
    }
}

impl Body for Recorded {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes_out = self.bytes_out.saturating_add(data.len() as u64);
                }
                if self.whole() {
                    self.complete(None);
                }
            }
            Poll::Ready(Some(Err(e))) => {
                let reason = e
                    .downcast_ref::<Cut>()
                    .map_or("upstream_error", Cut::reason);
                self.complete(Some(reason));
            }
            Poll::Ready(None) => self.complete(None),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Recorded {
    fn drop(&mut self) {
        let whole = self.whole();
        self.complete((!whole).then_some("client_gone"));
    }
}

/// How a request body failed on the client's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyFailure {
    /// Nothing failed (yet).
    None = 0,
    /// Bad framing, or the client went away mid-body: a 400.
    Broken = 1,
    /// No byte for the body timeout: a 408.
    Stalled = 2,
}

/// Where the forwarder reads how the request body ended.
#[derive(Debug, Default)]
pub(crate) struct BodyOutcome(AtomicU8);

impl BodyOutcome {
    fn set(&self, failure: BodyFailure) {
        self.0.store(failure as u8, Ordering::Relaxed);
    }

    /// What happened to the body so far.
    pub(crate) fn get(&self) -> BodyFailure {
        match self.0.load(Ordering::Relaxed) {
            1 => BodyFailure::Broken,
            2 => BodyFailure::Stalled,
            _ => BodyFailure::None,
        }
    }
}

/// The request body on its way to the upstream: counts its bytes, gives up when the
/// client sends nothing for `idle` (a stalled upload must not hold a connection and an
/// upstream request forever), and remembers whether it failed on the client's side (bad
/// chunked framing, a client gone mid-body), so that the answer blames the client (400,
/// 408) instead of the upstream (502).
pub struct Counted {
    inner: hyper::body::Incoming,
    bytes: Arc<AtomicU64>,
    outcome: Arc<BodyOutcome>,
    idle: Duration,
    stall: Option<Pin<Box<Sleep>>>,
}

impl Counted {
    /// Wraps a request body; the counters are shared with the journal and the forwarder.
    pub(crate) fn new(
        inner: hyper::body::Incoming,
        bytes: Arc<AtomicU64>,
        outcome: Arc<BodyOutcome>,
        idle: Duration,
    ) -> Self {
        Counted {
            inner,
            bytes,
            outcome,
            idle,
            stall: None,
        }
    }
}

impl Body for Counted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                self.stall = None;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.outcome.set(BodyFailure::Broken);
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let idle = self.idle;
                let stall = self
                    .stall
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                if stall.as_mut().poll(cx).is_ready() {
                    self.outcome.set(BodyFailure::Stalled);
                    return Poll::Ready(Some(Err(Box::new(Cut("request body stalled")))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
