//! The durable message spool of keel: an append-only segment log with group commit.
//!
//! Keel answers an SMTP `DATA` with `250 OK` only after [`Spool::append`] has resolved. Everything
//! in this crate exists to make that answer true: an accepted message is never lost.
//!
//! # Durability contract
//!
//! * **`append` → `Ok(())`**: the message's record (id, envelope, body) has been written to the
//!   active segment *and* `fdatasync`ed, and the segment file's directory entry was synced when the
//!   segment was created. The message survives a process crash or power loss (given a disk that
//!   honours flushes) and is returned by the next [`Spool::open`] until it is removed. Concurrent
//!   appends share syncs (group commit); none is acknowledged before its own bytes are durable.
//! * **`append` → `Err(_)`** (disk full, I/O error, spool closed): the message is not in the
//!   spool. Its record was cut off the segment, or, if even that was impossible, a `Remove`
//!   tombstone for it is written as soon as the disk accepts writes again (for a failed
//!   replacement of a live id, the stored version is rewritten instead). The only window left is
//!   a crash before that write is durable, which can bring back a message its client was told
//!   failed: a duplicate, never a loss. The spool keeps working once the disk recovers.
//! * **Dropping an `append` future** does not cancel it: the message may still be stored.
//! * **`update` / `remove`**: applied to the in-memory state at once (so `read_body` of a removed
//!   message fails immediately), written to disk in order by the writer thread, and durable with
//!   the next synced batch, or within about a second ([`SYNC_INTERVAL`]) when the spool is idle,
//!   or on [`Spool::flush`] / [`Spool::close`]. A crash can lose the last second of them; that
//!   only repeats work (a message delivered again, an attempt counted again), never loses mail.
//!   Once durable, a removed message never comes back, whatever compaction does later.
//! * **Torn writes**: a crash in the middle of a write leaves a partial or checksum-failing record
//!   at the end of the last segment. It was never acknowledged, so recovery truncates it away.
//!   Corruption anywhere else (bit rot) is logged with the file and offset, counted in
//!   [`SpoolStats::corrupt_segments`], and the rest of that segment is skipped (the messages
//!   after the damage in that file are lost) so that all the others can still be delivered.
//!   `read_body` checks the checksum too: damage found later is an error, never bad mail.
//! * **ENOSPC / EIO** while writing: the whole batch is rejected (every append in it gets the
//!   error), nothing half-written stays visible, pending updates/removes are retried, and the
//!   spool serves new requests as soon as the disk accepts them. See [`writer`] for the details.
//!
//! # On-disk format
//!
//! A directory holding a `LOCK` file (locked exclusively while a spool has it open) and
//! `segment-<20-digit seq>.log` files. Each segment starts with the 8-byte header `KEELSPL1`
//! (magic + format version) followed by records framed as
//! `[len: u32 LE][crc32c: u32 LE of kind+payload][kind: u8][payload]`, of three kinds: `Message`
//! (id, envelope, body), `Update` (id, new envelope) and `Remove` (id). Later records override
//! earlier ones. The full description is in [`format`](mod@format); recovery rules are in [`recovery`].
//!
//! # Example
//!
//! ```
//! use keel_spool::{Spool, SpoolOptions};
//!
//! # fn main() -> Result<(), keel_spool::SpoolError> {
//! # let tmp = tempfile::tempdir().expect("tempdir");
//! # let dir = tmp.path();
//! let (spool, recovered) = Spool::open(dir, SpoolOptions::default())?;
//! assert!(recovered.is_empty());
//!
//! let id = 0x0190_a5e0_c2d4_7000_8000_0000_0000_0001;
//! spool.append_blocking(id, b"envelope v1".to_vec(), b"Subject: hi\r\n\r\nhello".to_vec())?;
//! // Durable now: this is when the SMTP server may say 250.
//! spool.update(id, b"envelope v2".to_vec());
//! assert_eq!(spool.read_body(id)?, b"Subject: hi\r\n\r\nhello");
//! spool.close()?;
//!
//! let (spool, recovered) = Spool::open(dir, SpoolOptions::default())?;
//! assert_eq!(recovered[0].envelope, b"envelope v2");
//! spool.remove(id);
//! spool.close()?;
//! # Ok(())
//! # }
//! ```
//!
//! # Architecture
//!
//! One writer thread ([`writer`]) owns every write to the files; API handles send it requests
//! over a channel. An in-memory index maps each live message to its record and latest envelope;
//! readers take its lock only to copy a location, then `pread` without holding it. Disk use stays
//! bounded: dead segments are deleted oldest first and a mostly-dead oldest segment is compacted.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
pub mod format;
mod index;
pub mod recovery;
mod segment;
mod shared;
pub mod writer;

#[cfg(test)]
mod tests;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

pub use crate::error::SpoolError;
use crate::format::SEGMENT_HEADER_LEN;
use crate::segment::SegmentFile;
use crate::shared::{Counters, Shared};
pub use crate::writer::SYNC_INTERVAL;
use crate::writer::{Ack, Request, Writer};

/// Identifies a message. Chosen by the caller (a UUID v7 as `u128`), unique per message.
pub type MessageId = u128;

/// Tuning knobs of a spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolOptions {
    /// The active segment is sealed and a new one started once it has grown past this many
    /// bytes. Smaller segments free disk space sooner; larger ones mean fewer files.
    pub segment_size: u64,
    /// Cap on the bytes written by one group commit (a single larger message still goes alone).
    /// Bounds the latency a big batch adds to the appends queued behind it.
    pub max_batch_bytes: usize,
}

impl Default for SpoolOptions {
    fn default() -> Self {
        SpoolOptions {
            segment_size: 64 << 20,
            max_batch_bytes: 8 << 20,
        }
    }
}

/// A live message found on disk by [`Spool::open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredMessage {
    /// The id it was appended with.
    pub id: MessageId,
    /// Its latest envelope: from the last durable [`Spool::update`], else from the append.
    pub envelope: Vec<u8>,
    /// Length of its body; read the body with [`Spool::read_body`].
    pub body_len: u64,
}

/// Upper bounds (microseconds) of the fdatasync latency buckets in [`SpoolStats`].
pub const SYNC_LATENCY_BOUNDS_MICROS: [u64; 11] = [
    500, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000, 128_000, 256_000, 512_000,
];

/// A snapshot of the spool's state and counters, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SpoolStats {
    /// Messages appended and not removed.
    pub live_messages: u64,
    /// On-disk size of those messages' records.
    pub live_bytes: u64,
    /// Total size of all segment files.
    pub disk_bytes: u64,
    /// Number of segment files.
    pub segments: u64,
    /// `fdatasync` calls made by the writer since open.
    pub syncs: u64,
    /// Appends acknowledged by synced batches since open; `synced_appends / syncs` is the
    /// mean group-commit batch size.
    pub synced_appends: u64,
    /// Total time spent in `fdatasync` since open, in microseconds.
    pub sync_micros: u64,
    /// `fdatasync` latencies since open: counts per bucket of [`SYNC_LATENCY_BOUNDS_MICROS`]
    /// (each bucket: up to and including its bound), the last one for anything slower.
    pub sync_latency_buckets: [u64; SYNC_LATENCY_BOUNDS_MICROS.len() + 1],
    /// Batches rejected because a write or sync failed, since open.
    pub failed_batches: u64,
    /// Messages copied forward by compaction, since open.
    pub relocated_messages: u64,
    /// Segment files deleted, since open.
    pub deleted_segments: u64,
    /// Segments in which recovery found corruption and skipped the rest of the segment.
    pub corrupt_segments: u64,
    /// Bytes of torn writes truncated off the last segment by recovery.
    pub torn_bytes_truncated: u64,
}

/// A handle to an open spool. Cheap to clone; all clones share one writer thread.
///
/// The spool stays open until [`Spool::close`] is called or the last handle is dropped (which
/// flushes and stops the writer too, blocking until it has).
#[derive(Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    tx: Sender<Request>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Spool {
    /// Opens (creating if needed) the spool directory, takes an exclusive lock on `<dir>/LOCK`
    /// ([`SpoolError::Locked`] if another spool holds it, in this process or another), scans every
    /// segment, starts a new active segment and the writer thread, and returns the live messages
    /// (sorted by id) with their latest envelopes.
    ///
    /// Blocking: call it before serving, or from `spawn_blocking`.
    pub fn open(
        dir: &Path,
        opts: SpoolOptions,
    ) -> Result<(Spool, Vec<RecoveredMessage>), SpoolError> {
        create_dir(dir)?;
        let lock = lock_dir(dir)?;
        let recovered = recovery::recover(dir)?;
        let mut index = recovered.index;

        // Never append to a recovered segment: its tail may have been cut, and a fresh segment
        // makes "torn writes happen only at the end of the last segment" hold across restarts.
        let active = Arc::new(SegmentFile::create(dir, recovered.next_seq)?);
        index.add_segment(Arc::clone(&active), SEGMENT_HEADER_LEN);

        let mut messages: Vec<RecoveredMessage> = index
            .messages()
            .map(|(id, entry)| RecoveredMessage {
                id,
                envelope: entry.envelope.clone(),
                body_len: entry.location.body_len,
            })
            .collect();
        messages.sort_unstable_by_key(|m| m.id);

        let shared = Arc::new(Shared::new(dir.to_owned(), index));
        Counters::add(
            &shared.counters.corrupt_segments,
            recovered.corrupt_segments,
        );
        Counters::add(&shared.counters.torn_bytes, recovered.torn_bytes);

        let (tx, rx) = mpsc::channel();
        let writer = Writer::new(
            Arc::clone(&shared),
            rx,
            &opts,
            lock,
            active,
            recovered.next_seq + 1,
        );
        let handle = std::thread::Builder::new()
            .name("keel-spool-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| SpoolError::io("start the writer thread for", dir, e))?;

        let spool = Spool {
            inner: Arc::new(Inner {
                shared,
                tx,
                writer: Mutex::new(Some(handle)),
            }),
        };
        Ok((spool, messages))
    }

    /// Appends a message. Resolves once its record is written and `fdatasync`ed (see the
    /// durability contract in the crate docs); concurrent appends share one sync.
    ///
    /// Appending an id that is already live replaces that message.
    pub async fn append(
        &self,
        id: MessageId,
        envelope: Vec<u8>,
        body: Vec<u8>,
    ) -> Result<(), SpoolError> {
        let (tx, rx) = oneshot::channel();
        self.submit_append(id, envelope, body, Ack::Async(tx))?;
        rx.await.unwrap_or(Err(SpoolError::Closed))
    }

    /// [`Spool::append`] for threads outside an async runtime. Blocks until durable.
    pub fn append_blocking(
        &self,
        id: MessageId,
        envelope: Vec<u8>,
        body: Vec<u8>,
    ) -> Result<(), SpoolError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.submit_append(id, envelope, body, Ack::Blocking(tx))?;
        rx.recv().unwrap_or(Err(SpoolError::Closed))
    }

    fn submit_append(
        &self,
        id: MessageId,
        envelope: Vec<u8>,
        body: Vec<u8>,
        ack: Ack,
    ) -> Result<(), SpoolError> {
        self.check_open()?;
        // Encoding (copy + checksum) happens here, on the caller's thread, keeping the writer's
        // critical path to one memcpy per record.
        let record = format::encode_message(id, &envelope, &body).ok_or(SpoolError::TooLarge)?;
        let body_len = body.len() as u64;
        drop(body);
        self.inner
            .tx
            .send(Request::Append {
                id,
                envelope,
                record,
                body_len,
                ack,
            })
            .map_err(|_| SpoolError::Closed)
    }

    /// Replaces the envelope of a live message (delivery progress: recipients done, attempts).
    /// Unknown ids are ignored. Takes effect in memory at once; durable as described in the
    /// crate docs (with the next synced batch, or within [`SYNC_INTERVAL`]).
    pub fn update(&self, id: MessageId, envelope: Vec<u8>) {
        if self.inner.shared.is_closed() {
            tracing::debug!(id = %format_args!("{id:#x}"), "update after close ignored");
            return;
        }
        let Some(record) = format::encode_update(id, &envelope) else {
            tracing::error!(
                id = %format_args!("{id:#x}"),
                envelope_len = envelope.len(),
                "envelope too large for the spool; update ignored",
            );
            return;
        };
        let mut index = self.inner.shared.index();
        if index.update(id, envelope) {
            // Sent under the index lock so the log sees mutations in the order the index did.
            // A send error means the writer is gone (closed): nothing left to persist to.
            let _ = self.inner.tx.send(Request::Mutation(record));
        }
    }

    /// Marks a message finished (delivered, bounced, expired). Unknown ids are ignored.
    /// Takes effect in memory at once; durable like [`Spool::update`]. Once durable, the message
    /// never comes back.
    pub fn remove(&self, id: MessageId) {
        if self.inner.shared.is_closed() {
            tracing::debug!(id = %format_args!("{id:#x}"), "remove after close ignored");
            return;
        }
        let mut index = self.inner.shared.index();
        if index.remove(id) {
            let _ = self
                .inner
                .tx
                .send(Request::Mutation(format::encode_remove(id)));
        }
    }

    /// Reads a live message's body, checking its checksum. Safe from any thread, concurrently
    /// with the writer and with compaction moving the message (the reader keeps the old segment
    /// file open even if it is deleted meanwhile).
    pub fn read_body(&self, id: MessageId) -> Result<Vec<u8>, SpoolError> {
        self.check_open()?;
        let (file, location) = {
            let index = self.inner.shared.index();
            let entry = index.get(id).ok_or(SpoolError::NotFound)?;
            let segment = index
                .segment(entry.location.seq)
                .ok_or(SpoolError::NotFound)?;
            (Arc::clone(&segment.file), entry.location)
        };
        file.read_body(id, location.offset, location.size)
    }

    /// Writes and syncs every pending update/remove; returns once they are durable.
    /// Blocking. Not needed for appends, which are durable when they resolve.
    pub fn flush(&self) -> Result<(), SpoolError> {
        self.check_open()?;
        let (tx, rx) = mpsc::sync_channel(1);
        self.inner
            .tx
            .send(Request::Flush(Ack::Blocking(tx)))
            .map_err(|_| SpoolError::Closed)?;
        rx.recv().unwrap_or(Err(SpoolError::Closed))
    }

    /// Current state and counters.
    pub fn stats(&self) -> SpoolStats {
        let shared = &self.inner.shared;
        let counters = &shared.counters;
        let mut stats = SpoolStats {
            syncs: Counters::get(&counters.syncs),
            synced_appends: Counters::get(&counters.synced_appends),
            sync_micros: Counters::get(&counters.sync_micros),
            sync_latency_buckets: std::array::from_fn(|i| Counters::get(&counters.sync_buckets[i])),
            failed_batches: Counters::get(&counters.failed_batches),
            relocated_messages: Counters::get(&counters.relocated_messages),
            deleted_segments: Counters::get(&counters.deleted_segments),
            corrupt_segments: Counters::get(&counters.corrupt_segments),
            torn_bytes_truncated: Counters::get(&counters.torn_bytes),
            ..SpoolStats::default()
        };
        let index = shared.index();
        stats.live_messages = index.live_messages() as u64;
        for segment in index.segments() {
            stats.segments += 1;
            stats.disk_bytes += segment.size;
            stats.live_bytes += segment.live_bytes;
        }
        stats
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.inner.shared.dir
    }

    /// Writes and syncs everything pending, stops the writer thread and releases the directory
    /// lock. Afterwards every call fails with [`SpoolError::Closed`] (`update`/`remove` are
    /// ignored). Idempotent: later calls return `Ok(())`. Blocking.
    pub fn close(&self) -> Result<(), SpoolError> {
        self.inner.close()
    }

    fn check_open(&self) -> Result<(), SpoolError> {
        if self.inner.shared.is_closed() {
            Err(SpoolError::Closed)
        } else {
            Ok(())
        }
    }
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.inner.shared.dir)
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn close(&self) -> Result<(), SpoolError> {
        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(handle) = writer.take() else {
            return Ok(());
        };
        self.shared.closed.store(true, Ordering::Release);
        let (tx, rx) = mpsc::sync_channel(1);
        let result = match self.tx.send(Request::Close(Ack::Blocking(tx))) {
            Ok(()) => rx.recv().unwrap_or(Err(SpoolError::Closed)),
            Err(_) => Err(SpoolError::Closed),
        };
        if handle.join().is_err() {
            tracing::error!(dir = %self.shared.dir.display(), "spool writer thread panicked");
        }
        result
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(err) = self.close() {
            tracing::error!(
                dir = %self.shared.dir.display(),
                error = %err,
                "spool dropped without close, and the final flush failed",
            );
        }
    }
}

/// Creates the spool directory if needed, making its creation durable.
fn create_dir(dir: &Path) -> Result<(), SpoolError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(|e| SpoolError::io("create directory", dir, e))?;
    let parent = match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    segment::sync_dir(parent)
}

/// Takes the directory lock: an exclusive `flock` on `<dir>/LOCK`, per open file description,
/// so it also excludes a second open in the same process. The holder's pid is written into the
/// file for operators.
fn lock_dir(dir: &Path) -> Result<File, SpoolError> {
    let path: PathBuf = dir.join("LOCK");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| SpoolError::io("open lock file", &path, e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            return Err(SpoolError::Locked {
                dir: dir.to_owned(),
            });
        }
        Err(fs::TryLockError::Error(e)) => return Err(SpoolError::io("lock", &path, e)),
    }
    // Informational only; failing to record the pid is not worth refusing to start.
    let _ = file
        .set_len(0)
        .and_then(|()| writeln!(file, "{}", std::process::id()));
    Ok(file)
}
