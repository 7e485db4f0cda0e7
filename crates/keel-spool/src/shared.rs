//! State shared between the API handles and the writer thread.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::index::Index;

pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    index: Mutex<Index>,
    pub(crate) counters: Counters,
    /// Set by `close`; checked by every API call.
    pub(crate) closed: AtomicBool,
    #[cfg(test)]
    pub(crate) faults: Faults,
}

impl Shared {
    pub(crate) fn new(dir: PathBuf, index: Index) -> Shared {
        Shared {
            dir,
            index: Mutex::new(index),
            counters: Counters::default(),
            closed: AtomicBool::new(false),
            #[cfg(test)]
            faults: Faults::default(),
        }
    }

    /// Locks the index. Critical sections never leave the index half-updated (they do not
    /// panic between related changes), so a poisoned lock is still usable.
    pub(crate) fn index(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// Monotonic counters reported by `Spool::stats`.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) syncs: AtomicU64,
    /// Appends acknowledged by synced batches (÷ syncs = mean group-commit batch size).
    pub(crate) synced_appends: AtomicU64,
    /// Time spent in fdatasync, microseconds.
    pub(crate) sync_micros: AtomicU64,
    /// fdatasync latencies per bucket of [`crate::SYNC_LATENCY_BOUNDS_MICROS`] (last: larger).
    pub(crate) sync_buckets: [AtomicU64; crate::SYNC_LATENCY_BOUNDS_MICROS.len() + 1],
    pub(crate) failed_batches: AtomicU64,
    pub(crate) relocated_messages: AtomicU64,
    pub(crate) deleted_segments: AtomicU64,
    pub(crate) corrupt_segments: AtomicU64,
    pub(crate) torn_bytes: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Test-only fault injection: each counter is the number of upcoming operations of that kind
/// the writer fails (an injected write failure writes half the buffer first, like a disk that
/// fills up mid-write).
#[cfg(test)]
#[derive(Default)]
pub(crate) struct Faults {
    pub(crate) write: AtomicU64,
    pub(crate) sync: AtomicU64,
    pub(crate) truncate: AtomicU64,
}

#[cfg(test)]
impl Faults {
    /// Consumes one injected failure from `counter`, if any is left.
    pub(crate) fn take(counter: &AtomicU64) -> bool {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}
