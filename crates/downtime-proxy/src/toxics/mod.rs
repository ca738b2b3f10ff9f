//! The toxic engine: what the active toxics of one link do to each chunk, as pure functions
//! of time, so they are tested without sockets.
//!
//! A link reads a chunk, hands it to [`LinkToxics::on_chunk`], and gets back *scheduled*
//! items: bytes to write at a given instant, or a close. The link writes them when their time
//! comes while it keeps reading, so a latency toxic delays every chunk by the same amount
//! without slowing the stream (chunks are pipelined, never delayed one after another).
//!
//! Per-link state (a bandwidth pacer's clock, a limit_data counter, an inactivity deadline)
//! lives in [`Stage`]; a new chain snapshot is merged by toxic name so that an update keeps
//! the counters, as Toxiproxy does.

mod stages;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use downtime_model::{Toxic, ToxicKind};
use rand::RngExt;
use rand::rngs::SmallRng;
use tokio::time::Instant;

pub(crate) use stages::Stage;

/// One toxic of a direction's chain, with the version it was last created or updated at.
#[derive(Debug, Clone)]
pub struct ChainEntry {
    /// The toxic as configured.
    pub toxic: Toxic,
    /// Changes whenever the toxic is created or updated; links re-roll toxicity on a change.
    pub generation: u64,
    /// Counters shared by every connection (HTTP faults: matches seen, rate-limit buckets).
    pub state: Arc<crate::http::faults::FaultState>,
}

/// The toxics of one direction of a proxy, in insertion order: the snapshot links watch.
#[derive(Debug, Clone, Default)]
pub struct Chain {
    /// Toxics in the order they act on a chunk.
    pub entries: Vec<ChainEntry>,
}

impl Chain {
    /// Whether a connection created now must answer every close with a reset.
    pub fn wants_reset_on_close(&self) -> bool {
        self.entries
            .iter()
            .any(|e| matches!(e.toxic.kind, ToxicKind::ResetPeer { .. }) && e.toxic.toxicity > 0.0)
    }
}

/// How a link ends when a toxic closes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseKind {
    /// Close both sockets normally (FIN).
    Close,
    /// Close both sockets with a TCP reset.
    Reset,
}

/// What a link does next with the front of its queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// Write these bytes.
    Data(Bytes),
    /// End this direction (half-close the destination).
    Eof,
    /// Close the whole connection; `stage` names the toxic that asked for it.
    Close {
        /// Normal close or reset.
        kind: CloseKind,
        /// The toxic responsible; the close is cancelled if that toxic is removed first.
        stage: Arc<str>,
    },
}

/// An item and the instant it is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheduled {
    /// When the item may be written.
    pub at: Instant,
    /// What to write.
    pub item: Item,
}

/// Items are released up to this much before their instant: the link's precise timer
/// (`crate::precise`) wakes a few tens of microseconds after it, and the write that
/// follows takes a few more, so the bytes leave on time rather than late.
pub(crate) const TIMER_SLACK: Duration = Duration::from_micros(50);

/// A duration far enough in the future to mean "never" without overflowing `Instant`.
pub(crate) const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `now + d`, saturating at [`NEVER`] instead of panicking on overflow.
pub(crate) fn saturating_at(now: Instant, d: Duration) -> Instant {
    now.checked_add(d.min(NEVER))
        .unwrap_or_else(|| now + Duration::from_secs(3600))
}

/// The active toxics of one link and everything it has scheduled but not yet written.
#[derive(Debug)]
pub struct LinkToxics {
    stages: Vec<Stage>,
    queue: VecDeque<Scheduled>,
    queued_bytes: usize,
    last_at: Option<Instant>,
    rng: SmallRng,
}

/// What a chain change asks of the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeOutcome {
    /// Keep going.
    Continue,
    /// A removed toxic corrupted the stream (an active `timeout`): close the connection.
    Close,
}

impl LinkToxics {
    /// A link with the toxics of `chain`, each rolled for activity with `rng`.
    pub fn new(chain: &Chain, now: Instant, mut rng: SmallRng) -> Self {
        let stages = chain
            .entries
            .iter()
            .map(|e| Stage::new(e, now, roll(&mut rng, &e.toxic)))
            .collect();
        LinkToxics {
            stages,
            queue: VecDeque::new(),
            queued_bytes: 0,
            last_at: None,
            rng,
        }
    }

    /// True when no toxic acts on this link and nothing waits: bytes can be copied directly.
    pub fn is_passthrough(&self) -> bool {
        self.queue.is_empty() && self.stages.iter().all(|s| !s.active)
    }

    /// Whether nothing is scheduled (no bytes, end or close): a flush is complete.
    pub fn queue_is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Bytes scheduled but not yet written; the link stops reading past a bound.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// The next instant something must happen: an item falls due or a deadline expires.
    pub fn next_deadline(&self) -> Option<Instant> {
        let front = self
            .queue
            .front()
            .map(|s| s.at.checked_sub(TIMER_SLACK).unwrap_or(s.at));
        let timers = self.stages.iter().filter_map(Stage::deadline).min();
        match (front, timers) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether an inactivity deadline (timeout toxic) has expired at `now`.
    pub fn expired(&self, now: Instant) -> bool {
        self.stages
            .iter()
            .filter_map(Stage::deadline)
            .any(|d| d <= now)
    }

    /// Takes the front item if it is due at `now` (within [`TIMER_SLACK`]).
    pub fn pop_due(&mut self, now: Instant) -> Option<Item> {
        let now = now.checked_add(TIMER_SLACK).unwrap_or(now);
        if self.queue.front().is_some_and(|s| s.at <= now) {
            let s = self.queue.pop_front()?;
            if let Item::Data(b) = &s.item {
                self.queued_bytes = self.queued_bytes.saturating_sub(b.len());
            }
            Some(s.item)
        } else {
            None
        }
    }

    fn push(&mut self, mut s: Scheduled) {
        // Bytes never overtake each other: an item is due no earlier than the one before it.
        if let Some(last) = self.last_at {
            s.at = s.at.max(last);
        }
        self.last_at = Some(s.at);
        if let Item::Data(b) = &s.item {
            self.queued_bytes = self.queued_bytes.saturating_add(b.len());
        }
        self.queue.push_back(s);
    }

    /// Runs a chunk that arrived at `now` through the active toxics and schedules the result.
    pub fn on_chunk(&mut self, data: Bytes, now: Instant) {
        let mut pieces = vec![(now, data)];
        let mut closes = Vec::new();
        for stage in self.stages.iter_mut().filter(|s| s.active) {
            pieces = stage.apply(pieces, now, &mut self.rng, &mut closes);
            if pieces.is_empty() {
                break;
            }
        }
        let mut items: Vec<Scheduled> = pieces
            .into_iter()
            .map(|(at, b)| Scheduled {
                at,
                item: Item::Data(b),
            })
            .collect();
        // Closes follow the data that caused them; `push` keeps everything in stream order.
        items.extend(closes);
        for s in items {
            self.push(s);
        }
    }

    /// Schedules the end of the stream read at `now` (delayed by slow_close toxics).
    pub fn on_eof(&mut self, now: Instant) {
        let mut at = now;
        for stage in self.stages.iter().filter(|s| s.active) {
            at = stage.delay_eof(at);
        }
        self.push(Scheduled {
            at,
            item: Item::Eof,
        });
    }

    /// Adopts a new chain snapshot: kept toxics keep their state, updated ones re-roll their
    /// toxicity (keeping counters), removed ones flush what they held back.
    pub fn on_chain_change(&mut self, chain: &Chain, now: Instant) -> ChangeOutcome {
        let mut old: Vec<Stage> = std::mem::take(&mut self.stages);
        let mut changed_or_removed = false;
        let mut outcome = ChangeOutcome::Continue;
        let mut next = Vec::with_capacity(chain.entries.len());
        for entry in &chain.entries {
            let position = old.iter().position(|s| *s.name == *entry.toxic.name);
            let stage = match position.map(|i| old.swap_remove(i)) {
                Some(s) if s.generation == entry.generation => s,
                Some(s) => {
                    changed_or_removed = true;
                    let active = roll(&mut self.rng, &entry.toxic);
                    s.updated(entry, now, active)
                }
                None => Stage::new(entry, now, roll(&mut self.rng, &entry.toxic)),
            };
            next.push(stage);
        }
        for removed in &old {
            changed_or_removed = true;
            if removed.active && removed.closes_on_removal() {
                outcome = ChangeOutcome::Close;
            }
        }
        self.stages = next;
        if changed_or_removed {
            self.flush(now);
        }
        outcome
    }

    /// Releases held-back items at once (the toxics that delayed them changed), keeping them
    /// stalled only if a bandwidth toxic of rate 0 still stands, and dropping closes whose
    /// toxic is gone.
    fn flush(&mut self, now: Instant) {
        let stalled = self.stages.iter().any(Stage::stalls);
        let names: Vec<Arc<str>> = self.stages.iter().map(|s| s.name.clone()).collect();
        let at = if stalled {
            saturating_at(now, NEVER)
        } else {
            now
        };
        self.queue.retain(|s| match &s.item {
            Item::Close { stage, .. } => names.contains(stage),
            _ => true,
        });
        for s in &mut self.queue {
            if matches!(s.item, Item::Data(_) | Item::Eof) {
                s.at = s.at.min(at);
            }
        }
        self.last_at = self.queue.back().map(|s| s.at);
    }
}

/// Rolls a toxic's toxicity for one link: ≤0 never active, ≥1 always.
fn roll(rng: &mut SmallRng, toxic: &Toxic) -> bool {
    if toxic.toxicity <= 0.0 {
        false
    } else if toxic.toxicity >= 1.0 {
        true
    } else {
        toxic.is_active_for(rng.random::<f32>())
    }
}

#[cfg(test)]
mod tests;
