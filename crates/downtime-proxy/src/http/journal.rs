//! The request journal: the last requests an HTTP proxy saw and what answered them, so a test
//! can assert "my client retried three times with backoff".

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;

/// How many requests a proxy remembers.
pub const JOURNAL_CAPACITY: usize = 1000;

/// One request as the proxy saw it.
#[derive(Debug, Clone, Serialize)]
pub struct JournalEntry {
    /// Sequence number within the proxy, from 1.
    pub seq: u64,
    /// Milliseconds since the Unix epoch when the request arrived.
    pub at_ms: u64,
    /// Request method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// A few headers worth asserting on (never credentials).
    pub headers: std::collections::BTreeMap<String, String>,
    /// Status returned to the client (0 when the connection was cut without an answer).
    pub status: u16,
    /// Name of the fault that answered or altered the request, if any.
    pub fault: Option<String>,
    /// Milliseconds from arrival to the response head.
    pub duration_ms: u64,
}

/// A bounded, lock-protected ring of entries (the lock is held for a push or a copy only).
#[derive(Debug, Default)]
pub struct Journal {
    entries: Mutex<(u64, VecDeque<JournalEntry>)>,
}

impl Journal {
    /// Appends an entry, numbering it and dropping the oldest past capacity.
    pub fn push(&self, mut entry: JournalEntry) {
        let mut guard = match self.entries.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        guard.0 = guard.0.saturating_add(1);
        entry.seq = guard.0;
        if guard.1.len() >= JOURNAL_CAPACITY {
            guard.1.pop_front();
        }
        guard.1.push_back(entry);
    }

    /// The last `limit` entries, oldest first.
    pub fn last(&self, limit: usize) -> Vec<JournalEntry> {
        let guard = match self.entries.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let skip = guard.1.len().saturating_sub(limit);
        guard.1.iter().skip(skip).cloned().collect()
    }
}
