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
//!
//! # Memory, bounded by construction
//!
//! A link's queue holds one entry per chunk read, whatever the toxics: a slicer does not cut
//! a chunk into thousands of entries up front, it keeps the chunk at its stage and cuts the
//! next slice only when the previous one has been written ([`Entry::Waiting`]); a timeout
//! toxic holds the chunks it swallows the same way, merging small ones. Every entry is
//! charged the buffer it keeps alive (its capacity, not its length) plus its own size, and
//! the link reads another chunk only while [`LinkToxics::accepts_more`] says the charge and
//! the entry count are under [`MAX_LINK_MEMORY`] and [`MAX_LINK_ITEMS`]. One read can go
//! past the bound by at most itself: its buffer, and the pieces a bandwidth toxic cuts it
//! into (one per 100 ms of its rate).

mod chain;
mod stages;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use downtime_model::Toxic;
use rand::RngExt;
use rand::rngs::SmallRng;
use tokio::time::Instant;

pub use chain::{Chain, ChainEntry, CloseKind, Item, Scheduled};
pub(crate) use stages::Stage;

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

/// The memory a link's queue may account for before the link stops reading (backpressure):
/// enough to pipeline a 1 MiB response behind a latency toxic.
pub const MAX_LINK_MEMORY: usize = 2 * 1024 * 1024;

/// The entries a link's queue may hold before the link stops reading.
pub const MAX_LINK_ITEMS: usize = 1024;

/// What an active timeout toxic keeps of the bytes it swallows, to give them back if it
/// becomes inactive; past this it drops them (as Toxiproxy does) and the link is closed
/// instead of released.
const MAX_HELD_BYTES: usize = MAX_LINK_MEMORY / 2;
const MAX_HELD_ITEMS: usize = MAX_LINK_ITEMS / 2;

/// Held chunks smaller than this are merged into the one before them (one entry per 4 KiB
/// at least, however small the reads).
const MERGE_HELD: usize = 4 * 1024;

/// What one queue entry costs besides the buffer it keeps alive.
const ENTRY_COST: usize = std::mem::size_of::<Queued>();

/// One entry of a link's queue.
#[derive(Debug)]
enum Entry {
    /// Done with every toxic: written when due.
    Ready(Scheduled),
    /// Bytes at stage `stage`, which the stages after it have not seen yet: a slicer cuts
    /// them one slice at a time, a timeout toxic holds them while it is active.
    Waiting {
        stage: Arc<str>,
        /// When the bytes reached the stage (the earliest the next slice may leave).
        at: Instant,
        data: Bytes,
        /// Held by a timeout toxic (counted against `MAX_HELD_*`).
        held: bool,
    },
}

/// An entry and the bytes of buffer it keeps alive (at least its payload).
#[derive(Debug)]
struct Queued {
    entry: Entry,
    charge: usize,
}

impl Queued {
    fn payload(&self) -> usize {
        match &self.entry {
            Entry::Ready(Scheduled {
                item: Item::Data(b),
                ..
            })
            | Entry::Waiting { data: b, .. } => b.len(),
            Entry::Ready(_) => 0,
        }
    }
}

/// The active toxics of one link and everything it has scheduled but not yet written.
#[derive(Debug)]
pub struct LinkToxics {
    stages: Vec<Stage>,
    queue: VecDeque<Queued>,
    /// Payload bytes in the queue.
    queued_bytes: usize,
    /// Buffer bytes the queue keeps alive (sum of the entries' charges).
    charged: usize,
    /// Payload bytes and entries held by timeout toxics.
    held_bytes: usize,
    held_items: usize,
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
            charged: 0,
            held_bytes: 0,
            held_items: 0,
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

    /// Payload bytes scheduled or held but not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Entries in the queue (a chunk being sliced or held is one entry).
    pub fn queued_items(&self) -> usize {
        self.queue.len()
    }

    /// The memory the queue accounts for: the buffers its entries keep alive, by capacity,
    /// plus the entries themselves.
    pub fn accounted_memory(&self) -> usize {
        self.charged
            .saturating_add(self.queue.len().saturating_mul(ENTRY_COST))
    }

    /// Whether the link may read another chunk: the queue is under [`MAX_LINK_MEMORY`] and
    /// [`MAX_LINK_ITEMS`]. A link that stops reading leaves the rest in the kernel's socket
    /// buffers, so the sender slows down instead of the proxy growing.
    pub fn accepts_more(&self) -> bool {
        self.accounted_memory() < MAX_LINK_MEMORY && self.queue.len() < MAX_LINK_ITEMS
    }

    /// The next instant something must happen: an item falls due or a deadline expires.
    pub fn next_deadline(&self) -> Option<Instant> {
        let front = match self.queue.front().map(|q| &q.entry) {
            Some(Entry::Ready(s)) => Some(s.at.checked_sub(TIMER_SLACK).unwrap_or(s.at)),
            // Held by an active timeout toxic (`settle` cuts slices as soon as they are first).
            _ => None,
        };
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
        match self.queue.front() {
            Some(Queued {
                entry: Entry::Ready(s),
                ..
            }) if s.at <= now => {}
            _ => return None,
        }
        let q = self.pop_front()?;
        self.settle();
        match q.entry {
            Entry::Ready(s) => Some(s.item),
            Entry::Waiting { .. } => None,
        }
    }

    /// Runs a chunk that arrived at `now` through the active toxics and schedules the result.
    /// The chunk is charged its length: use [`LinkToxics::on_chunk_in`] when it lives in a
    /// bigger buffer.
    pub fn on_chunk(&mut self, data: Bytes, now: Instant) {
        let len = data.len();
        self.on_chunk_in(data, len, now);
    }

    /// Like [`LinkToxics::on_chunk`], for a chunk that keeps a buffer of `capacity` bytes
    /// alive: the queue is charged the capacity until the chunk's last byte is written.
    pub fn on_chunk_in(&mut self, data: Bytes, capacity: usize, now: Instant) {
        let charge = capacity.max(data.len());
        let entries = self.run(0, vec![(now, data)], now);
        self.enqueue(entries, charge, false);
        self.settle();
    }

    /// Schedules the end of the stream read at `now` (delayed by slow_close toxics). It
    /// follows every byte still queued.
    pub fn on_eof(&mut self, now: Instant) {
        let mut at = now;
        for stage in self.stages.iter().filter(|s| s.active) {
            at = stage.delay_eof(at);
        }
        let eof = Entry::Ready(Scheduled {
            at,
            item: Item::Eof,
        });
        self.enqueue(vec![eof], 0, false);
        self.settle();
    }

    /// Adopts a new chain snapshot: kept toxics keep their state, updated ones re-roll their
    /// toxicity (keeping counters), removed ones flush what they held back.
    pub fn on_chain_change(&mut self, chain: &Chain, now: Instant) -> ChangeOutcome {
        let old_order: Vec<Arc<str>> = self.stages.iter().map(|s| s.name.clone()).collect();
        let mut old: Vec<Stage> = std::mem::take(&mut self.stages);
        let mut changed: Vec<Arc<str>> = Vec::new();
        let mut outcome = ChangeOutcome::Continue;
        let mut next = Vec::with_capacity(chain.entries.len());
        for entry in &chain.entries {
            let position = old.iter().position(|s| *s.name == *entry.toxic.name);
            let stage = match position.map(|i| old.swap_remove(i)) {
                Some(s) if s.generation == entry.generation => s,
                Some(s) => {
                    changed.push(s.name.clone());
                    let active = roll(&mut self.rng, &entry.toxic);
                    if !active && s.lost_bytes() {
                        // It dropped bytes it could not hold: releasing the rest would
                        // leave a gap in the stream.
                        outcome = ChangeOutcome::Close;
                    }
                    s.updated(entry, now, active)
                }
                None => Stage::new(entry, now, roll(&mut self.rng, &entry.toxic)),
            };
            next.push(stage);
        }
        for removed in &old {
            changed.push(removed.name.clone());
            if removed.active && removed.closes_on_removal() {
                outcome = ChangeOutcome::Close;
            }
        }
        self.stages = next;
        if !changed.is_empty() {
            self.flush(now, &old_order, &changed);
        }
        self.settle();
        outcome
    }

    /// Runs timed pieces through the active stages from index `from` on. Stops at the first
    /// slicer or timeout toxic, which keeps the bytes as [`Entry::Waiting`]; the closes the
    /// stages schedule follow the data that caused them.
    fn run(&mut self, from: usize, mut pieces: Vec<(Instant, Bytes)>, now: Instant) -> Vec<Entry> {
        let mut closes = Vec::new();
        let mut out = Vec::new();
        for stage in self.stages.iter_mut().skip(from).filter(|s| s.active) {
            if stage.waits() {
                stage.touch(now);
                let held = stage.holds();
                out.extend(pieces.drain(..).map(|(at, data)| Entry::Waiting {
                    stage: stage.name.clone(),
                    at,
                    data,
                    held,
                }));
                break;
            }
            pieces = stage.apply(pieces, now, &mut self.rng, &mut closes);
            if pieces.is_empty() {
                break;
            }
        }
        out.extend(pieces.into_iter().map(|(at, b)| {
            Entry::Ready(Scheduled {
                at,
                item: Item::Data(b),
            })
        }));
        out.extend(closes.into_iter().map(Entry::Ready));
        out
    }

    /// Queues `entries` at the back (or, in order, at the front), charging each its payload
    /// and the last one carrying bytes the rest of `charge` (the buffer they share).
    fn enqueue(&mut self, entries: Vec<Entry>, charge: usize, front: bool) {
        let payload: usize = entries
            .iter()
            .map(|e| match e {
                Entry::Ready(Scheduled {
                    item: Item::Data(b),
                    ..
                })
                | Entry::Waiting { data: b, .. } => b.len(),
                Entry::Ready(_) => 0,
            })
            .sum();
        let mut extra = charge.saturating_sub(payload);
        let last_data = entries.iter().rposition(|e| {
            matches!(
                e,
                Entry::Ready(Scheduled {
                    item: Item::Data(_),
                    ..
                }) | Entry::Waiting { .. }
            )
        });
        let mut queued: Vec<Queued> = Vec::with_capacity(entries.len());
        for (i, entry) in entries.into_iter().enumerate() {
            let mut q = Queued { entry, charge: 0 };
            q.charge = q.payload();
            if Some(i) == last_data {
                q.charge = q.charge.saturating_add(std::mem::take(&mut extra));
            }
            queued.push(q);
        }
        if front {
            for q in queued.into_iter().rev() {
                if let Some(q) = self.admit(q) {
                    self.count_in(&q);
                    self.queue.push_front(q);
                }
            }
        } else {
            for q in queued {
                self.push_back(q);
            }
        }
    }

    fn push_back(&mut self, q: Queued) {
        let Err(q) = self.merge_held(q) else { return };
        let Some(mut q) = self.admit(q) else { return };
        // Bytes never overtake each other: an item is due no earlier than the one before it.
        if let (Entry::Ready(s), Some(Entry::Ready(before))) =
            (&mut q.entry, self.queue.back().map(|b| &b.entry))
        {
            s.at = s.at.max(before.at);
        }
        self.count_in(&q);
        self.queue.push_back(q);
    }

    /// Merges a small held chunk into the held chunk before it (copying both), so that tiny
    /// reads cost one entry per few KiB; gives the entry back when it cannot.
    fn merge_held(&mut self, q: Queued) -> Result<(), Queued> {
        let Entry::Waiting {
            stage,
            data,
            held: true,
            ..
        } = &q.entry
        else {
            return Err(q);
        };
        let room = self.held_bytes.saturating_add(data.len()) <= MAX_HELD_BYTES;
        let Some(Queued {
            entry:
                Entry::Waiting {
                    stage: back_stage,
                    data: back,
                    held: true,
                    ..
                },
            charge,
        }) = self.queue.back_mut()
        else {
            return Err(q);
        };
        if back_stage != stage || back.len() + data.len() > MERGE_HELD || !room {
            return Err(q);
        }
        let mut merged = bytes::BytesMut::with_capacity(back.len() + data.len());
        merged.extend_from_slice(back);
        merged.extend_from_slice(data);
        let added = data.len();
        let old_charge = *charge;
        *back = merged.freeze();
        *charge = back.len();
        let new_charge = *charge;
        self.charged = self
            .charged
            .saturating_sub(old_charge)
            .saturating_add(new_charge);
        self.queued_bytes = self.queued_bytes.saturating_add(added);
        self.held_bytes = self.held_bytes.saturating_add(added);
        Ok(())
    }

    /// Drops a chunk a timeout toxic cannot hold any more (marking the toxic as having lost
    /// bytes); otherwise gives the entry back.
    fn admit(&mut self, q: Queued) -> Option<Queued> {
        if let Entry::Waiting {
            stage,
            data,
            held: true,
            ..
        } = &q.entry
            && (self.held_items >= MAX_HELD_ITEMS
                || self.held_bytes.saturating_add(data.len()) > MAX_HELD_BYTES)
        {
            if let Some(s) = self.stages.iter_mut().find(|s| s.name == *stage) {
                s.lose_bytes();
            }
            return None;
        }
        Some(q)
    }

    fn count_in(&mut self, q: &Queued) {
        self.queued_bytes = self.queued_bytes.saturating_add(q.payload());
        self.charged = self.charged.saturating_add(q.charge);
        if let Entry::Waiting {
            held: true, data, ..
        } = &q.entry
        {
            self.held_bytes = self.held_bytes.saturating_add(data.len());
            self.held_items += 1;
        }
    }

    fn count_out(&mut self, q: &Queued) {
        self.queued_bytes = self.queued_bytes.saturating_sub(q.payload());
        self.charged = self.charged.saturating_sub(q.charge);
        if let Entry::Waiting {
            held: true, data, ..
        } = &q.entry
        {
            self.held_bytes = self.held_bytes.saturating_sub(data.len());
            self.held_items = self.held_items.saturating_sub(1);
        }
    }

    fn pop_front(&mut self) -> Option<Queued> {
        let q = self.queue.pop_front()?;
        self.count_out(&q);
        Some(q)
    }

    /// Makes the front of the queue an item with a due time, or bytes an active timeout
    /// holds: cuts the next slice of a chunk at a slicer (serialized: a slice leaves no
    /// earlier than `delay` after the one before it, whichever chunk that was) and sends it
    /// through the stages after the slicer; passes on bytes at a stage that is no longer
    /// active.
    fn settle(&mut self) {
        loop {
            let Some(Queued {
                entry: Entry::Waiting { stage, .. },
                ..
            }) = self.queue.front()
            else {
                return;
            };
            let index = self.stages.iter().position(|s| s.name == *stage);
            let cut = match index.map(|i| &self.stages[i]) {
                Some(s) if s.active && s.holds() => return,
                Some(s) => s.active,
                None => false,
            };
            let (at, piece, charge) = if cut {
                let Some(q) = self.queue.front_mut() else {
                    return;
                };
                let Entry::Waiting { at, data, .. } = &mut q.entry else {
                    return;
                };
                let stage = &mut self.stages[index.unwrap_or_default()];
                let (due, size) = stage.next_slice(*at, data.len(), &mut self.rng);
                let slice = data.split_to(size);
                let len = slice.len();
                if data.is_empty() {
                    self.queued_bytes = self.queued_bytes.saturating_sub(len);
                    let q = self.pop_front();
                    let charge = q.map_or(len, |q| q.charge);
                    (due, slice, charge)
                } else {
                    q.charge = q.charge.saturating_sub(len);
                    self.charged = self.charged.saturating_sub(len);
                    self.queued_bytes = self.queued_bytes.saturating_sub(len);
                    (due, slice, len)
                }
            } else {
                let Some(q) = self.pop_front() else { return };
                let Entry::Waiting { at, data, .. } = q.entry else {
                    return;
                };
                (at, data, q.charge)
            };
            let from = index.map_or(self.stages.len(), |i| i + 1);
            let entries = self.run(from, vec![(at, piece)], at);
            self.enqueue(entries, charge, true);
        }
    }

    /// After a change: releases held-back items at once (the toxics that delayed them
    /// changed), keeping them stalled only if a bandwidth toxic of rate 0 still stands, and
    /// drops closes whose toxic is gone. Bytes waiting at a removed toxic go on through the
    /// toxics after it; bytes at an updated one start over from `now`.
    fn flush(&mut self, now: Instant, old_order: &[Arc<str>], changed: &[Arc<str>]) {
        let stalled = self.stages.iter().any(Stage::stalls);
        let names: Vec<Arc<str>> = self.stages.iter().map(|s| s.name.clone()).collect();
        let release = if stalled {
            saturating_at(now, NEVER)
        } else {
            now
        };
        let old = std::mem::take(&mut self.queue);
        self.queued_bytes = 0;
        self.charged = 0;
        self.held_bytes = 0;
        self.held_items = 0;
        for mut q in old {
            match &mut q.entry {
                Entry::Ready(s) => match &s.item {
                    Item::Close { stage, .. } if !names.contains(stage) => continue,
                    Item::Close { .. } => {}
                    Item::Data(_) | Item::Eof => s.at = s.at.min(release),
                },
                Entry::Waiting { stage, at, .. } => {
                    if !names.contains(stage) {
                        // Resume at the first toxic that followed the removed one.
                        let after = old_order
                            .iter()
                            .position(|n| n == stage)
                            .map_or(old_order.len(), |i| i + 1);
                        let from = old_order[after..]
                            .iter()
                            .find_map(|n| names.iter().position(|m| m == n))
                            .unwrap_or(names.len());
                        let Entry::Waiting { data, .. } = q.entry else {
                            continue;
                        };
                        let entries = self.run(from, vec![(now, data)], now);
                        self.enqueue(entries, q.charge, false);
                        continue;
                    }
                    if changed.contains(stage) {
                        *at = now;
                    }
                }
            }
            self.count_in(&q);
            self.queue.push_back(q);
        }
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
