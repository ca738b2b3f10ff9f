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
    /// The host the request was for (its `Host`, or a forward proxy's target), lower case
    /// and without port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// A few headers worth asserting on (never credentials).
    pub headers: std::collections::BTreeMap<String, String>,
    /// Status returned to the client (0 when the connection was cut without an answer).
    pub status: u16,
    /// Name of the fault that answered or altered the request, if any.
    pub fault: Option<String>,
    /// Milliseconds from arrival to the last byte of the response body (to the cut, for a
    /// response cut short; to the head while the body is still streaming).
    pub duration_ms: u64,
    /// Milliseconds from arrival to the response head.
    pub headers_ms: u64,
    /// Request body bytes read from the client.
    pub bytes_in: u64,
    /// Response body bytes handed to the client.
    pub bytes_out: u64,
    /// Why the response ended early: `client_gone`, `abort`, `h15`, `upstream_error`, or
    /// absent for a response that was sent whole (or is still streaming).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cut: Option<&'static str>,
}

/// A bounded, lock-protected ring of entries (the lock is held for a push or a copy only).
#[derive(Debug, Default)]
pub struct Journal {
    entries: Mutex<(u64, VecDeque<JournalEntry>)>,
}

impl Journal {
    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, VecDeque<JournalEntry>)> {
        match self.entries.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Appends an entry, numbering it and dropping the oldest past capacity; returns its
    /// sequence number, with which [`Journal::update`] completes it later.
    pub fn push(&self, mut entry: JournalEntry) -> u64 {
        let mut guard = self.lock();
        guard.0 = guard.0.saturating_add(1);
        entry.seq = guard.0;
        if guard.1.len() >= JOURNAL_CAPACITY {
            guard.1.pop_front();
        }
        guard.1.push_back(entry);
        guard.0
    }

    /// Changes entry `seq` if it is still remembered (a body ended, or was cut).
    pub fn update(&self, seq: u64, change: impl FnOnce(&mut JournalEntry)) {
        let mut guard = self.lock();
        let Some(first) = guard.1.front().map(|e| e.seq) else {
            return;
        };
        let Some(index) = seq.checked_sub(first).and_then(|i| usize::try_from(i).ok()) else {
            return;
        };
        if let Some(entry) = guard.1.get_mut(index) {
            change(entry);
        }
    }

    /// The last `limit` entries, oldest first.
    pub fn last(&self, limit: usize) -> Vec<JournalEntry> {
        let guard = self.lock();
        let skip = guard.1.len().saturating_sub(limit);
        guard.1.iter().skip(skip).cloned().collect()
    }
}
