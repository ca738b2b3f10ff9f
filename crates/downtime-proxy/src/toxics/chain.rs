//! What links watch and what the engine hands back: the chain of toxics of one direction
//! (a snapshot, swapped whole on every change) and the scheduled items a link writes.

use std::sync::Arc;

use bytes::Bytes;
use downtime_model::{Toxic, ToxicKind};
use tokio::time::Instant;

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
