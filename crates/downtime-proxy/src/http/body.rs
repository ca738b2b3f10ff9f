//! Response bodies: whole buffers, and wrappers that slow, cut or watch a streamed body.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// Errors of a response body; any error makes hyper close the connection.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type every response of an HTTP proxy uses.
pub type ResponseBody = BoxBody<Bytes, BoxError>;

/// A body made of one buffer.
pub fn full(bytes: impl Into<Bytes>) -> ResponseBody {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// Why a wrapped body ended early.
#[derive(Debug)]
pub struct Cut(pub &'static str);

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Cut {}

/// How long a cut body waits before failing, so that hyper flushes the head and the bytes
/// already passed: hyper drops its unflushed write buffer when a body fails, and it flushes
/// only when the body is pending.
const CUT_GRACE: Duration = Duration::from_millis(50);

/// Passes `allowed` bytes of the inner body, then fails so the connection is cut.
pub struct CutAfter {
    inner: ResponseBody,
    allowed: usize,
    grace: Option<Pin<Box<Sleep>>>,
}

impl CutAfter {
    /// Wraps `inner`, cutting after `allowed` bytes.
    pub fn new(inner: ResponseBody, allowed: usize) -> Self {
        CutAfter {
            inner,
            allowed,
            grace: None,
        }
    }

    /// Stays pending for [`CUT_GRACE`] (hyper flushes meanwhile), then fails.
    fn cut(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let grace = self
            .grace
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(CUT_GRACE)));
        if grace.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        Poll::Ready(Some(Err(Box::new(Cut("connection cut by an abort fault")))))
    }
}

impl Body for CutAfter {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.allowed == 0 {
            return self.cut(cx);
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(mut data) => {
                    if data.len() >= self.allowed {
                        data.truncate(self.allowed);
                    }
                    self.allowed -= data.len();
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
                Err(frame) => Poll::Ready(Some(Ok(frame))),
            },
            // The body ended before the cut point: cut now, so the client still sees a break.
            Poll::Ready(None) => {
                self.allowed = 0;
                self.cut(cx)
            }
            other => other,
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Paces a body at `bytes_per_sec`, in slices of at most 1/10 s worth of bytes: each slice
/// is released once its transfer time has passed.
pub struct Paced {
    inner: ResponseBody,
    bytes_per_sec: u64,
    pending: Option<Bytes>,
    ready: Option<Bytes>,
    sleep: Option<Pin<Box<Sleep>>>,
    next_free: Option<Instant>,
}

impl Paced {
    /// Wraps `inner` at `bytes_per_sec` (at least 1).
    pub fn new(inner: ResponseBody, bytes_per_sec: u64) -> Self {
        Paced {
            inner,
            bytes_per_sec: bytes_per_sec.max(1),
            pending: None,
            ready: None,
            sleep: None,
            next_free: None,
        }
    }
}

impl Body for Paced {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            if let Some(sleep) = self.sleep.as_mut() {
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.sleep = None;
                if let Some(ready) = self.ready.take() {
                    return Poll::Ready(Some(Ok(Frame::data(ready))));
                }
            }
            if let Some(mut data) = self.pending.take() {
                let slice = usize::try_from(self.bytes_per_sec / 10)
                    .unwrap_or(usize::MAX)
                    .max(1);
                let part = data.split_to(data.len().min(slice));
                if !data.is_empty() {
                    self.pending = Some(data);
                }
                let nanos = (part.len() as u128).saturating_mul(1_000_000_000)
                    / u128::from(self.bytes_per_sec);
                let cost = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
                let now = Instant::now();
                let start = self.next_free.map_or(now, |f| f.max(now));
                let done = start.checked_add(cost).unwrap_or(start);
                self.next_free = Some(done);
                self.ready = Some(part);
                self.sleep = Some(Box::pin(tokio::time::sleep_until(done)));
                continue;
            }
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if data.is_empty() => {}
                    Ok(data) => self.pending = Some(data),
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                other => return other,
            }
        }
    }
}

/// Cuts the body when no data arrives for `idle` (Heroku's H15); `on_idle` logs it.
pub struct IdleWatch {
    inner: ResponseBody,
    idle: Duration,
    sleep: Pin<Box<Sleep>>,
    on_idle: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl IdleWatch {
    /// Wraps `inner` with an idle deadline.
    pub fn new(
        inner: ResponseBody,
        idle: Duration,
        on_idle: Box<dyn FnOnce() + Send + Sync>,
    ) -> Self {
        let deadline = Instant::now()
            .checked_add(idle)
            .unwrap_or_else(Instant::now);
        IdleWatch {
            inner,
            idle,
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
            on_idle: Some(on_idle),
        }
    }
}

impl Body for IdleWatch {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(item) => {
                let next = Instant::now()
                    .checked_add(self.idle)
                    .unwrap_or_else(Instant::now);
                self.sleep.as_mut().reset(next);
                Poll::Ready(item)
            }
            Poll::Pending => {
                if self.sleep.as_mut().poll(cx).is_ready() {
                    if let Some(log) = self.on_idle.take() {
                        log();
                    }
                    return Poll::Ready(Some(Err(Box::new(Cut("idle connection (H15)")))));
                }
                Poll::Pending
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Cut {
    /// The journal's name for this cut (`abort`, `h15`).
    pub fn reason(&self) -> &'static str {
        if self.0.contains("H15") {
            "h15"
        } else {
            "abort"
        }
    }
}
