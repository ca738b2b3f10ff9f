//! One toxic's behaviour on one link. Every duration is computed from user numbers with
//! saturating arithmetic: a huge latency means "a very long time", never a panic.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use downtime_model::ToxicKind;
use rand::RngExt;
use rand::rngs::SmallRng;
use tokio::time::Instant;

use super::{ChainEntry, CloseKind, Item, NEVER, Scheduled, saturating_at};

/// A toxic's state on one link.
#[derive(Debug)]
pub(crate) struct Stage {
    pub(crate) name: Arc<str>,
    pub(crate) generation: u64,
    /// Result of the toxicity roll: an inactive stage passes everything through.
    pub(crate) active: bool,
    kind: ToxicKind,
    /// Bandwidth, slicer: when the pacer is free to send the next slice.
    next_free: Option<Instant>,
    /// limit_data: bytes already let through.
    passed: u64,
    /// timeout: when the link closes unless a chunk arrives first.
    deadline: Option<Instant>,
    /// reset_peer: whether the reset is already scheduled.
    fired: bool,
    /// timeout: bytes were dropped because the hold was full (releasing would leave a gap).
    lost: bool,
}

impl Stage {
    pub(crate) fn new(entry: &ChainEntry, now: Instant, active: bool) -> Self {
        let mut stage = Stage {
            name: entry.toxic.name.as_str().into(),
            generation: entry.generation,
            active,
            kind: entry.toxic.kind.clone(),
            next_free: None,
            passed: 0,
            deadline: None,
            fired: false,
            lost: false,
        };
        stage.arm(now);
        stage
    }

    /// The same toxic with new parameters; per-link counters are kept.
    pub(crate) fn updated(self, entry: &ChainEntry, now: Instant, active: bool) -> Self {
        let mut stage = Stage {
            generation: entry.generation,
            active,
            kind: entry.toxic.kind.clone(),
            next_free: None,
            deadline: None,
            fired: false,
            ..self
        };
        stage.arm(now);
        stage
    }

    fn arm(&mut self, now: Instant) {
        if let (true, ToxicKind::Timeout { timeout }) = (self.active, &self.kind)
            && *timeout > 0
        {
            self.deadline = Some(saturating_at(now, Duration::from_millis(*timeout)));
        }
    }

    /// Whether this stage keeps the bytes reaching it in the queue ([`super::Entry::Waiting`])
    /// instead of transforming them at once: an active slicer or timeout.
    pub(crate) fn waits(&self) -> bool {
        self.active
            && matches!(
                self.kind,
                ToxicKind::Slicer { .. } | ToxicKind::Timeout { .. }
            )
    }

    /// Whether the bytes waiting here are held (a timeout toxic), not cut.
    pub(crate) fn holds(&self) -> bool {
        matches!(self.kind, ToxicKind::Timeout { .. })
    }

    /// A chunk reached this stage at `now`: a timeout toxic restarts its inactivity timer.
    pub(crate) fn touch(&mut self, now: Instant) {
        if let (true, ToxicKind::Timeout { timeout }) = (self.active, &self.kind)
            && *timeout > 0
        {
            self.deadline = Some(saturating_at(now, Duration::from_millis(*timeout)));
        }
    }

    /// A timeout toxic had to drop bytes it could not hold.
    pub(crate) fn lose_bytes(&mut self) {
        self.lost = true;
    }

    /// Whether this timeout toxic dropped bytes.
    pub(crate) fn lost_bytes(&self) -> bool {
        self.lost
    }

    /// The next slice of a chunk that reached this slicer at `at` with `remaining` bytes
    /// left: when it leaves and how long it is. Slices are serialized across chunks, as
    /// Toxiproxy's slicer sends one slice and sleeps `delay` before the next, whichever
    /// chunk it belongs to.
    pub(crate) fn next_slice(
        &mut self,
        at: Instant,
        remaining: usize,
        rng: &mut SmallRng,
    ) -> (Instant, usize) {
        let ToxicKind::Slicer {
            average_size,
            size_variation,
            delay,
        } = self.kind
        else {
            return (at, remaining);
        };
        let due = self.next_free.map_or(at, |free| free.max(at));
        self.next_free = Some(saturating_at(due, Duration::from_micros(delay)));
        (
            due,
            slice_size(average_size, size_variation, remaining, rng),
        )
    }

    /// The inactivity deadline of an active timeout toxic.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        if self.active { self.deadline } else { None }
    }

    /// Whether removing this toxic leaves a corrupted stream that must be closed.
    pub(crate) fn closes_on_removal(&self) -> bool {
        matches!(self.kind, ToxicKind::Timeout { .. })
    }

    /// Whether this stage holds data back forever (bandwidth rate 0).
    pub(crate) fn stalls(&self) -> bool {
        self.active && matches!(self.kind, ToxicKind::Bandwidth { rate: 0 })
    }

    /// When the end of stream may pass, given it reached this stage at `at`.
    pub(crate) fn delay_eof(&self, at: Instant) -> Instant {
        match self.kind {
            ToxicKind::SlowClose { delay } => saturating_at(at, Duration::from_millis(delay)),
            ToxicKind::Bandwidth { rate: 0 } => saturating_at(at, NEVER),
            _ => at,
        }
    }

    /// Transforms timed pieces; may drop them or schedule a close in `closes`.
    pub(crate) fn apply(
        &mut self,
        pieces: Vec<(Instant, Bytes)>,
        now: Instant,
        rng: &mut SmallRng,
        closes: &mut Vec<Scheduled>,
    ) -> Vec<(Instant, Bytes)> {
        match self.kind {
            // Slicer and timeout toxics wait (`waits`): the link cuts or holds their bytes.
            ToxicKind::Noop
            | ToxicKind::SlowClose { .. }
            | ToxicKind::Http(_)
            | ToxicKind::Slicer { .. }
            | ToxicKind::Timeout { .. } => pieces,
            ToxicKind::Latency { latency, jitter } => pieces
                .into_iter()
                .map(|(at, b)| (saturating_at(at, latency_delay(latency, jitter, rng)), b))
                .collect(),
            ToxicKind::Bandwidth { rate } => self.pace(pieces, rate),
            ToxicKind::LimitData { bytes } => self.limit(pieces, bytes, closes),
            ToxicKind::ResetPeer { timeout } => {
                if !self.fired {
                    self.fired = true;
                    let at = pieces.first().map_or(now, |p| p.0);
                    closes.push(Scheduled {
                        at: saturating_at(at, Duration::from_millis(timeout)),
                        item: Item::Close {
                            kind: CloseKind::Reset,
                            stage: self.name.clone(),
                        },
                    });
                }
                Vec::new()
            }
        }
    }

    fn pace(&mut self, pieces: Vec<(Instant, Bytes)>, rate_kbps: u64) -> Vec<(Instant, Bytes)> {
        if rate_kbps == 0 {
            return pieces
                .into_iter()
                .map(|(at, b)| (saturating_at(at, NEVER), b))
                .collect();
        }
        let bytes_per_sec = u128::from(rate_kbps).saturating_mul(1000);
        // Slices of 100 ms worth of bytes, as Toxiproxy cuts them.
        let slice_len = usize::try_from(rate_kbps.saturating_mul(100)).unwrap_or(usize::MAX);
        let mut out = Vec::new();
        for (at, mut b) in pieces {
            while !b.is_empty() {
                let part = b.split_to(b.len().min(slice_len));
                let start = self.next_free.map_or(at, |free| free.max(at));
                let nanos = (part.len() as u128).saturating_mul(1_000_000_000) / bytes_per_sec;
                let cost = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
                let done = saturating_at(start, cost);
                self.next_free = Some(done);
                out.push((done, part));
            }
        }
        out
    }

    fn limit(
        &mut self,
        pieces: Vec<(Instant, Bytes)>,
        limit: u64,
        closes: &mut Vec<Scheduled>,
    ) -> Vec<(Instant, Bytes)> {
        let mut out = Vec::new();
        let mut last = None;
        for (at, mut b) in pieces {
            last = Some(at);
            let room = limit.saturating_sub(self.passed);
            let take = usize::try_from(room).unwrap_or(usize::MAX).min(b.len());
            if take > 0 {
                b.truncate(take);
                self.passed = self.passed.saturating_add(take as u64);
                out.push((at, b));
            }
            if self.passed >= limit {
                break;
            }
        }
        if self.passed >= limit
            && let Some(at) = last
        {
            closes.push(Scheduled {
                at,
                item: Item::Close {
                    kind: CloseKind::Close,
                    stage: self.name.clone(),
                },
            });
        }
        out
    }
}

/// `latency ± jitter` milliseconds, never negative, computed without overflow.
pub(crate) fn latency_delay(latency: u64, jitter: u64, rng: &mut SmallRng) -> Duration {
    if jitter == 0 {
        return Duration::from_millis(latency);
    }
    let spread = i128::from(jitter);
    let offset = rng.random_range(-spread..spread);
    let ms = (i128::from(latency) + offset).max(0);
    Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
}

/// A slice length of `average ± variation` bytes (at least one), at most `remaining`.
fn slice_size(average: u64, variation: u64, remaining: usize, rng: &mut SmallRng) -> usize {
    let low = average.saturating_sub(variation).max(1);
    let high = average.saturating_add(variation).max(low);
    let size = if high > low {
        rng.random_range(low..=high)
    } else {
        low
    };
    usize::try_from(size).unwrap_or(usize::MAX).min(remaining)
}
