//! The writer thread: the only code that writes, syncs, creates or deletes segment files.
//!
//! # Group commit
//!
//! Requests arrive over an unbounded channel. The thread blocks for one, then drains whatever
//! else is already queued (up to `max_batch_bytes`), copies every record into one buffer, writes
//! it with one `pwrite` at the end of the active segment, calls `fdatasync` **once** if the batch
//! holds an append (or a relocated message), and only then indexes the appends and acknowledges
//! them. While one batch is being synced the next one queues up, so under load many appends
//! share each sync. `Update`/`Remove` records alone are written without a sync; they are synced
//! by the next batch that syncs, or by the thread itself within [`SYNC_INTERVAL`].
//!
//! # Failures (ENOSPC, EIO)
//!
//! A batch whose write or sync fails is rejected as a whole: every append in it gets the error.
//! The writer then truncates the active segment back to the last *synced* offset and syncs that.
//!
//! * If the **write** failed and the truncation succeeded, the segment is known to end at its
//!   last synced record, so the writer keeps using it.
//! * If the **sync** failed (after a failed `fdatasync` the kernel may have dropped dirty pages
//!   and the file's contents past the last good sync are unknown), or the truncation failed,
//!   the segment is *poisoned*: it is sealed and later writes go to a new segment. The rejected
//!   appends might still be on disk in the poisoned segment with valid checksums, so the writer
//!   writes a `Remove` tombstone for each of them at the start of the next batch that reaches
//!   the disk. Recovery scans in order, so the tombstones cancel them. (A rejected append that
//!   was to *replace* a live message gets no tombstone, which would remove the live one too;
//!   instead the live version is copied forward, like compaction does, so it is again the latest
//!   record.) Until the tombstones or copies are durable, a crash could resurrect a rejected
//!   message: a duplicate the client was told failed, never a loss.
//!
//! `Update`/`Remove` records of the failed batch, and those written since the last successful
//! sync (they may have been cut by the truncation or dropped by the failed sync), are kept in
//! order and written again before anything else, retried every second while idle.
//! The spool keeps serving: as soon as the disk accepts writes again, so does the spool.
//!
//! # Segment life cycle
//!
//! When the active segment passes `segment_size` it is synced, sealed and a new one is created.
//! A sealed segment holding no live message is deleted when it is the oldest segment, and the
//! directory is synced after each deletion before the next: a `Remove` record never disappears
//! before the `Message` record it cancels, so nothing removed can come back. (A dead segment
//! without any `Update`/`Remove` record cancels nothing and is deleted whatever its position;
//! that is how the empty active segment left by a restart goes away.)
//!
//! Because only the oldest segment can go, one long-lived message (a retry queue entry) would
//! pin every later segment. Compaction fixes that. The oldest sealed segment is compacted when
//!
//! * it is less than half live and a newer sealed segment exists (cheap: it moves less than
//!   half a segment to free a whole one), or
//! * the spool uses more than twice its live bytes plus one segment, whatever the oldest
//!   segment's share of live data: otherwise one big long-lived message, too live to be
//!   "worth" compacting, would pin unbounded disk behind it.
//!
//! Compacting copies the segment's live messages, with their current envelopes, into the
//! active segment (in chunks of at most `max_batch_bytes`, each synced, so requests keep being
//! served in between), repoints the index, and then deletes the emptied segment. A crash between
//! copy and deletion leaves two copies; the later one wins at recovery.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::MessageId;
use crate::error::SpoolError;
use crate::format::{self, SEGMENT_HEADER_LEN};
use crate::index::Location;
use crate::segment::{self, SegmentFile};
use crate::shared::{Counters, Shared};

/// Longest time an `Update`/`Remove` stays written but unsynced while the spool is idle.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// How long the writer waits before retrying after a failed write or maintenance step.
pub(crate) const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// A request to the writer thread.
pub(crate) enum Request {
    /// Store a message; acknowledged once it is durable.
    Append {
        id: MessageId,
        envelope: Vec<u8>,
        /// The encoded `Message` record (encoded by the caller, off the writer thread).
        record: Vec<u8>,
        body_len: u64,
        ack: Ack,
    },
    /// An encoded `Update` or `Remove` record, already applied to the index by the caller.
    Mutation(Vec<u8>),
    /// Write and sync everything pending; answer when durable.
    Flush(Ack),
    /// Like `Flush`, then stop the thread and release the directory lock.
    Close(Ack),
}

impl Request {
    fn size(&self) -> usize {
        match self {
            Request::Append { record, .. } | Request::Mutation(record) => record.len(),
            Request::Flush(_) | Request::Close(_) => 0,
        }
    }
}

/// Where to send the outcome of a request.
pub(crate) enum Ack {
    Async(oneshot::Sender<Result<(), SpoolError>>),
    Blocking(SyncSender<Result<(), SpoolError>>),
}

impl Ack {
    fn send(self, result: Result<(), SpoolError>) {
        // The caller may have stopped waiting (a dropped future); the outcome stands regardless.
        match self {
            Ack::Async(tx) => drop(tx.send(result)),
            Ack::Blocking(tx) => drop(tx.send(result)),
        }
    }
}

/// The segment currently appended to.
struct Active {
    file: Arc<SegmentFile>,
    /// End of the written data.
    len: u64,
    /// End of the data known to be durable.
    synced_len: u64,
}

/// A request that ends a batch and is answered after it.
enum Control {
    Flush(Ack),
    Close(Ack),
}

/// One record of a batch being committed.
enum Item {
    Append {
        id: MessageId,
        envelope: Vec<u8>,
        record: Vec<u8>,
        body_len: u64,
        ack: Ack,
    },
    Mutation(Vec<u8>),
    Relocation {
        id: MessageId,
        from: Location,
        record: Vec<u8>,
    },
}

/// An append or relocation copied into the batch buffer, waiting for the outcome.
struct Placed {
    id: MessageId,
    /// Offset of the record in the batch buffer.
    at: u64,
    size: usize,
    body_len: u64,
    what: PlacedKind,
}

enum PlacedKind {
    Append { envelope: Vec<u8>, ack: Ack },
    Relocation { from: Location },
}

/// Which step of a commit failed: it decides whether the segment can still be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Write,
    Sync,
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    rx: Receiver<Request>,
    segment_size: u64,
    max_batch_bytes: usize,
    /// The directory lock; held until the thread exits.
    _lock: File,
    /// `None` after the active segment was poisoned and no new one could be created yet.
    active: Option<Active>,
    next_seq: u64,
    /// A request that did not fit into the previous batch.
    stash: Option<Request>,
    /// `Update`/`Remove` records (and tombstones) that a failed batch did not get onto disk,
    /// oldest first: written before anything else.
    carry: Vec<Vec<u8>>,
    /// `Update`/`Remove` records written since the last sync, kept to be written again if that
    /// sync never comes. Non-empty only while `carry` is empty.
    unsynced: Vec<Vec<u8>>,
    /// When the oldest unsynced write happened.
    unsynced_since: Option<Instant>,
    /// When to retry writing `carry`.
    retry_at: Option<Instant>,
    /// Compaction has more to do: come back without waiting for a request.
    maintenance_pending: bool,
    /// No maintenance before this (backoff after a failed step).
    maintenance_after: Option<Instant>,
    /// Live messages compaction could not read (corrupt on disk): left where they are, pinning
    /// their segment until they are removed, and not retried.
    unrelocatable: HashMap<MessageId, Location>,
    /// Live messages whose replacement append failed in a poisoned segment: rewritten by the
    /// next maintenance step (see the module docs).
    reassert: Vec<MessageId>,
    buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn new(
        shared: Arc<Shared>,
        rx: Receiver<Request>,
        opts: &crate::SpoolOptions,
        lock: File,
        active: Arc<SegmentFile>,
        next_seq: u64,
    ) -> Writer {
        Writer {
            shared,
            rx,
            segment_size: opts.segment_size,
            max_batch_bytes: opts.max_batch_bytes,
            _lock: lock,
            active: Some(Active {
                file: active,
                len: SEGMENT_HEADER_LEN,
                synced_len: SEGMENT_HEADER_LEN,
            }),
            next_seq,
            stash: None,
            carry: Vec::new(),
            unsynced: Vec::new(),
            unsynced_since: None,
            retry_at: None,
            maintenance_pending: false,
            maintenance_after: None,
            unrelocatable: HashMap::new(),
            reassert: Vec::new(),
            buf: Vec::new(),
        }
    }

    /// The thread's main loop. Returns after a `Close` request, or when every `Spool` handle is
    /// gone (after flushing, as `Close` would).
    pub(crate) fn run(mut self) {
        // Recovery may have left dead or compactable segments behind.
        self.maintain();
        loop {
            let first = match self.stash.take() {
                Some(request) => Some(request),
                None => match self.wait() {
                    Ok(request) => request,
                    Err(Disconnected) => {
                        if let Err(err) = self.flush() {
                            tracing::error!(error = %err, "spool could not flush at shutdown");
                        }
                        return;
                    }
                },
            };
            if let Some(first) = first {
                let (items, control) = self.collect(first);
                // Appends learn the outcome through their acks; failures are logged inside.
                let _ = self.commit(items, false);
                match control {
                    None => {}
                    Some(Control::Flush(ack)) => ack.send(self.flush()),
                    Some(Control::Close(ack)) => {
                        ack.send(self.flush());
                        return;
                    }
                }
            }
            self.on_timers();
            self.maintain();
        }
    }

    /// Waits for the next request, or for the earliest timer (sync, retry, maintenance).
    fn wait(&mut self) -> Result<Option<Request>, Disconnected> {
        let now = Instant::now();
        let deadline = [
            self.unsynced_since.map(|since| since + SYNC_INTERVAL),
            (!self.carry.is_empty()).then(|| self.retry_at.unwrap_or(now)),
            self.maintenance_pending
                .then(|| self.maintenance_after.unwrap_or(now)),
        ]
        .into_iter()
        .flatten()
        .min();
        match deadline {
            None => self.rx.recv().map(Some).map_err(|_| Disconnected),
            Some(deadline) => match self
                .rx
                .recv_timeout(deadline.saturating_duration_since(now))
            {
                Ok(request) => Ok(Some(request)),
                Err(RecvTimeoutError::Timeout) => Ok(None),
                Err(RecvTimeoutError::Disconnected) => Err(Disconnected),
            },
        }
    }

    /// Builds a batch: `first` plus whatever is already queued, up to `max_batch_bytes`.
    /// Stops at a `Flush`/`Close`, which is returned to be handled after the batch.
    fn collect(&mut self, first: Request) -> (Vec<Item>, Option<Control>) {
        let mut items = Vec::new();
        let mut bytes = 0;
        let mut next = Some(first);
        while let Some(request) = next.take() {
            let size = request.size();
            if !items.is_empty() && bytes + size > self.max_batch_bytes {
                self.stash = Some(request);
                break;
            }
            bytes += size;
            match request {
                Request::Append {
                    id,
                    envelope,
                    record,
                    body_len,
                    ack,
                } => items.push(Item::Append {
                    id,
                    envelope,
                    record,
                    body_len,
                    ack,
                }),
                Request::Mutation(record) => items.push(Item::Mutation(record)),
                Request::Flush(ack) => return (items, Some(Control::Flush(ack))),
                Request::Close(ack) => return (items, Some(Control::Close(ack))),
            }
            next = self.rx.try_recv().ok();
        }
        (items, None)
    }

    /// Writes and syncs everything pending: carried records, rewrites owed after a failed
    /// replacement, unsynced updates/removes.
    fn flush(&mut self) -> Result<(), SpoolError> {
        self.reassert_replaced()?;
        self.commit(Vec::new(), true)
    }

    /// Periodic duties: sync writes that have waited [`SYNC_INTERVAL`], retry carried records.
    fn on_timers(&mut self) {
        let now = Instant::now();
        let sync_due = self
            .unsynced_since
            .is_some_and(|since| now >= since + SYNC_INTERVAL);
        let retry_due = !self.carry.is_empty() && self.retry_at.is_none_or(|at| now >= at);
        if sync_due || retry_due {
            // Failures are logged and handled inside.
            let _ = self.commit(Vec::new(), true);
        }
    }

    /// Writes `carry` and `items` as one batch at the end of the active segment, syncs if the
    /// batch holds an append or relocation (or `force_sync`), then updates the index and
    /// acknowledges. On failure, see the module docs.
    fn commit(&mut self, items: Vec<Item>, force_sync: bool) -> Result<(), SpoolError> {
        let mut mutations = std::mem::take(&mut self.carry);
        let mut placed = Vec::new();
        self.buf.clear();
        // Do not hold on to the memory of one huge message forever.
        self.buf.shrink_to(self.max_batch_bytes.max(1 << 20));
        for record in &mutations {
            self.buf.extend_from_slice(record);
        }
        for item in items {
            let at = self.buf.len() as u64;
            match item {
                Item::Mutation(record) => {
                    self.buf.extend_from_slice(&record);
                    mutations.push(record);
                }
                Item::Append {
                    id,
                    envelope,
                    record,
                    body_len,
                    ack,
                } => {
                    self.buf.extend_from_slice(&record);
                    placed.push(Placed {
                        id,
                        at,
                        size: record.len(),
                        body_len,
                        what: PlacedKind::Append { envelope, ack },
                    });
                }
                Item::Relocation { id, from, record } => {
                    self.buf.extend_from_slice(&record);
                    placed.push(Placed {
                        id,
                        at,
                        size: record.len(),
                        body_len: from.body_len,
                        what: PlacedKind::Relocation { from },
                    });
                }
            }
        }

        let sync = !placed.is_empty()
            || (force_sync && (!self.buf.is_empty() || self.unsynced_since.is_some()));
        if self.buf.is_empty() && !sync {
            return Ok(());
        }

        let active = match self.active.take() {
            Some(active) => active,
            None => match self.new_active() {
                Ok(active) => active,
                Err(err) => return Err(self.fail(None, Stage::Write, err, placed, mutations)),
            },
        };
        if !mutations.is_empty() {
            // Before writing: if the write fails half-way, some of them may be on disk anyway.
            self.shared.index().mark_mutations(active.file.seq());
        }
        let base = active.len;
        if let Err((stage, err)) = self.write_and_sync(&active, base, sync) {
            return Err(self.fail(Some(active), stage, err, placed, mutations));
        }

        let mut active = active;
        active.len = base + self.buf.len() as u64;
        let now = Instant::now();
        if sync {
            active.synced_len = active.len;
            self.unsynced.clear();
            self.unsynced_since = None;
        } else {
            self.unsynced.append(&mut mutations);
            self.unsynced_since.get_or_insert(now);
        }
        self.retry_at = None;

        let seq = active.file.seq();
        let mut acks = Vec::with_capacity(placed.len());
        let mut relocated = 0;
        {
            let mut index = self.shared.index();
            index.set_segment_size(seq, active.len);
            for p in placed {
                let location = Location {
                    seq,
                    offset: base + p.at,
                    size: p.size,
                    body_len: p.body_len,
                };
                match p.what {
                    PlacedKind::Append { envelope, ack } => {
                        index.insert(p.id, location, envelope);
                        acks.push(ack);
                    }
                    PlacedKind::Relocation { from } => {
                        if index.relocate(p.id, from, location) {
                            relocated += 1;
                        }
                    }
                }
            }
        }
        Counters::add(&self.shared.counters.relocated_messages, relocated);
        Counters::add(&self.shared.counters.synced_appends, acks.len() as u64);
        self.active = Some(active);
        for ack in acks {
            ack.send(Ok(()));
        }
        Ok(())
    }

    fn write_and_sync(
        &self,
        active: &Active,
        offset: u64,
        sync: bool,
    ) -> Result<(), (Stage, SpoolError)> {
        let file = &active.file;
        if !self.buf.is_empty() {
            self.write_at(file, offset)
                .map_err(|e| (Stage::Write, SpoolError::io("write to", file.path(), e)))?;
        }
        if sync {
            self.sync(file).map_err(|e| (Stage::Sync, e))?;
        }
        Ok(())
    }

    fn write_at(&self, file: &SegmentFile, offset: u64) -> std::io::Result<()> {
        #[cfg(test)]
        if crate::shared::Faults::take(&self.shared.faults.write) {
            let half = &self.buf[..self.buf.len() / 2];
            file.file().write_all_at(half, offset)?;
            return Err(std::io::Error::from_raw_os_error(28)); // ENOSPC
        }
        file.file().write_all_at(&self.buf, offset)
    }

    fn sync(&self, file: &SegmentFile) -> Result<(), SpoolError> {
        Counters::add(&self.shared.counters.syncs, 1);
        #[cfg(test)]
        if crate::shared::Faults::take(&self.shared.faults.sync) {
            let eio = std::io::Error::from_raw_os_error(5);
            return Err(SpoolError::io("sync", file.path(), eio));
        }
        let started = Instant::now();
        let result = file.sync_data();
        let micros = started.elapsed().as_micros() as u64;
        let counters = &self.shared.counters;
        Counters::add(&counters.sync_micros, micros);
        let bucket = crate::SYNC_LATENCY_BOUNDS_MICROS
            .iter()
            .position(|&bound| micros <= bound)
            .unwrap_or(crate::SYNC_LATENCY_BOUNDS_MICROS.len());
        Counters::add(&counters.sync_buckets[bucket], 1);
        result
    }

    /// Cuts the active segment back to its last synced offset and makes that durable.
    fn truncate_to_synced(&self, active: &Active) -> Result<(), SpoolError> {
        let file = &active.file;
        let truncate = || {
            #[cfg(test)]
            if crate::shared::Faults::take(&self.shared.faults.truncate) {
                return Err(std::io::Error::from_raw_os_error(5));
            }
            // A write handle: the active segment was created read-write.
            file.file().set_len(active.synced_len)
        };
        truncate().map_err(|e| SpoolError::io("truncate", file.path(), e))?;
        self.sync(file)
    }

    /// Handles a failed batch (see the module docs) and returns the error for the caller.
    fn fail(
        &mut self,
        active: Option<Active>,
        stage: Stage,
        err: SpoolError,
        placed: Vec<Placed>,
        mutations: Vec<Vec<u8>>,
    ) -> SpoolError {
        Counters::add(&self.shared.counters.failed_batches, 1);
        let appends = placed
            .iter()
            .filter(|p| matches!(p.what, PlacedKind::Append { .. }))
            .count();
        tracing::error!(
            error = %err,
            rejected_appends = appends,
            "spool batch failed; its appends are rejected and the spool will retry pending \
             updates/removes",
        );

        let poisoned = match active {
            None => false,
            Some(mut active) => {
                let cleanup = self.truncate_to_synced(&active);
                let poisoned = stage == Stage::Sync || cleanup.is_err();
                if let Err(cleanup) = &cleanup {
                    tracing::error!(error = %cleanup, "could not cut the failed batch off the segment");
                }
                if poisoned {
                    tracing::warn!(
                        segment = %active.file.path().display(),
                        "sealing the segment after a failed write; later writes go to a new one",
                    );
                    let size = active
                        .file
                        .file()
                        .metadata()
                        .map(|m| m.len())
                        .unwrap_or(active.len + self.buf.len() as u64);
                    self.shared
                        .index()
                        .set_segment_size(active.file.seq(), size);
                } else {
                    active.len = active.synced_len;
                    self.shared
                        .index()
                        .set_segment_size(active.file.seq(), active.len);
                    self.active = Some(active);
                }
                poisoned
            }
        };

        // Everything not known to be on disk, in the order it was produced.
        let mut carry = std::mem::take(&mut self.unsynced);
        carry.extend(mutations);
        let mut acks = Vec::new();
        {
            let index = self.shared.index();
            for p in placed {
                if let PlacedKind::Append { ack, .. } = p.what {
                    // A rejected append may survive in a poisoned segment: cancel it. If it was
                    // meant to replace a live message, a tombstone would remove that one too:
                    // write the live version again instead.
                    if poisoned {
                        if index.contains(p.id) {
                            self.reassert.push(p.id);
                        } else {
                            carry.push(format::encode_remove(p.id));
                        }
                    }
                    acks.push(ack);
                }
            }
        }
        for ack in acks {
            ack.send(Err(err.duplicate()));
        }
        self.carry = carry;
        self.unsynced_since = None;
        self.retry_at = Some(Instant::now() + RETRY_INTERVAL);
        err
    }

    /// Creates the next segment and registers it in the index.
    fn new_active(&mut self) -> Result<Active, SpoolError> {
        let seq = self.next_seq;
        // Never reuse a number, even if creating this one fails half-way.
        self.next_seq += 1;
        let file = Arc::new(SegmentFile::create(&self.shared.dir, seq)?);
        self.shared
            .index()
            .add_segment(Arc::clone(&file), SEGMENT_HEADER_LEN);
        tracing::debug!(segment = %file.path().display(), "new active segment");
        Ok(Active {
            file,
            len: SEGMENT_HEADER_LEN,
            synced_len: SEGMENT_HEADER_LEN,
        })
    }

    /// Rotation, segment deletion and one step of compaction.
    fn maintain(&mut self) {
        let now = Instant::now();
        if self.maintenance_after.is_some_and(|after| now < after) {
            return;
        }
        self.maintenance_after = None;
        self.maintenance_pending = false;

        if let Err(err) = self.rotate_if_full() {
            return self.back_off("rotate the active segment", &err);
        }
        if let Err(err) = self.reassert_replaced() {
            return self.back_off("rewrite messages after a failed replacement", &err);
        }
        if let Err(err) = self.delete_dead_segments() {
            return self.back_off("delete a dead segment", &err);
        }
        match self.compact_step() {
            Ok(more) => self.maintenance_pending = more,
            Err(err) => self.back_off("compact the oldest segment", &err),
        }
    }

    fn back_off(&mut self, what: &str, err: &SpoolError) {
        tracing::warn!(error = %err, "spool could not {what}; retrying later");
        self.maintenance_pending = true;
        self.maintenance_after = Some(Instant::now() + RETRY_INTERVAL);
    }

    /// Seals the active segment once it has passed `segment_size`, and makes sure there is an
    /// active segment (so the next append does not pay for creating one).
    fn rotate_if_full(&mut self) -> Result<(), SpoolError> {
        if self
            .active
            .as_ref()
            .is_some_and(|active| active.len >= self.segment_size)
        {
            // Sealed segments are fully durable.
            self.commit(Vec::new(), true)?;
            if let Some(sealed) = self.active.take() {
                tracing::debug!(segment = %sealed.file.path().display(), size = sealed.len, "sealed segment");
            }
        }
        if self.active.is_none() {
            self.active = Some(self.new_active()?);
        }
        Ok(())
    }

    fn active_seq(&self) -> Option<u64> {
        self.active.as_ref().map(|active| active.file.seq())
    }

    /// Deletes sealed segments that hold nothing live: the oldest ones, and any without
    /// `Update`/`Remove` records (such as a recovered, never-used active segment). A segment
    /// with `Remove` records goes only when it is the oldest, so a `Remove` never disappears
    /// before the record it cancels. Only this thread adds live records, so a dead segment
    /// cannot come back to life meanwhile.
    fn delete_dead_segments(&mut self) -> Result<(), SpoolError> {
        let active_seq = self.active_seq();
        let doomed: Vec<(u64, PathBuf)> = {
            let index = self.shared.index();
            let mut oldest_run = true;
            index
                .segments()
                .filter(|s| Some(s.file.seq()) != active_seq)
                .filter(|s| {
                    let dead = s.live.is_empty();
                    let deletable = dead && (oldest_run || !s.has_mutations);
                    oldest_run &= dead;
                    deletable
                })
                .map(|s| (s.file.seq(), s.file.path().to_owned()))
                .collect()
        };
        // In sequence order, each deletion durable before the next.
        for (seq, path) in doomed {
            segment::delete(&self.shared.dir, &path)?;
            self.shared.index().remove_segment(seq);
            Counters::add(&self.shared.counters.deleted_segments, 1);
            tracing::debug!(segment = %path.display(), "deleted dead segment");
        }
        Ok(())
    }

    /// Relocates up to `max_batch_bytes` of live messages out of the oldest segment if it is
    /// worth compacting. Returns whether there is more to do.
    fn compact_step(&mut self) -> Result<bool, SpoolError> {
        let (source, moves) = {
            let index = self.shared.index();
            let Some(oldest) = index.oldest_segment() else {
                return Ok(false);
            };
            let active_seq = self.active_seq();
            if Some(oldest.file.seq()) == active_seq || oldest.live.is_empty() {
                return Ok(false);
            }
            let mostly_dead = oldest.live_bytes * 2 < oldest.size;
            let newer_sealed = index
                .segments()
                .skip(1)
                .any(|s| Some(s.file.seq()) != active_seq);
            let (disk, live) = index.segments().fold((0, 0), |(disk, live), s| {
                (disk + s.size, live + s.live_bytes)
            });
            let bloated = disk > 2 * live + self.segment_size;
            let worth_it = (mostly_dead && newer_sealed) || bloated;
            if !worth_it {
                return Ok(false);
            }

            let mut moves = Vec::new();
            let mut bytes = 0;
            for &id in oldest.live.values() {
                let Some(entry) = index.get(id) else { continue };
                if self.unrelocatable.get(&id) == Some(&entry.location) {
                    continue;
                }
                if !moves.is_empty() && bytes + entry.location.size > self.max_batch_bytes {
                    break;
                }
                bytes += entry.location.size;
                moves.push((id, entry.location, entry.envelope.clone()));
            }
            (Arc::clone(&oldest.file), moves)
        };

        if moves.is_empty() {
            return Ok(false);
        }
        let items = self.relocations(&source, moves);
        if items.is_empty() {
            // Everything in this chunk was unreadable; the next step looks further.
            return Ok(true);
        }
        tracing::debug!(
            segment = %source.path().display(),
            messages = items.len(),
            "compaction: relocating live messages",
        );
        self.commit(items, true)?;
        Ok(true)
    }

    /// Writes a fresh copy of each live message whose failed replacement may have survived in
    /// a poisoned segment, so that the stored version is again the latest record on disk.
    fn reassert_replaced(&mut self) -> Result<(), SpoolError> {
        if self.reassert.is_empty() {
            return Ok(());
        }
        let mut items = Vec::new();
        for id in std::mem::take(&mut self.reassert) {
            let current = {
                let index = self.shared.index();
                index.get(id).and_then(|entry| {
                    let segment = index.segment(entry.location.seq)?;
                    Some((
                        Arc::clone(&segment.file),
                        entry.location,
                        entry.envelope.clone(),
                    ))
                })
            };
            // Not live any more: its `Remove` follows the failed record on disk anyway.
            if let Some((file, location, envelope)) = current {
                items.extend(self.relocations(&file, vec![(id, location, envelope)]));
            }
        }
        let ids: Vec<MessageId> = items
            .iter()
            .filter_map(|item| match item {
                Item::Relocation { id, .. } => Some(*id),
                _ => None,
            })
            .collect();
        if let Err(err) = self.commit(items, true) {
            self.reassert = ids;
            return Err(err);
        }
        Ok(())
    }

    /// Reads each message's body from `source` and encodes a `Message` record with its current
    /// envelope. Unreadable messages are logged and remembered, and left where they are.
    fn relocations(
        &mut self,
        source: &SegmentFile,
        moves: Vec<(MessageId, Location, Vec<u8>)>,
    ) -> Vec<Item> {
        let mut items = Vec::with_capacity(moves.len());
        for (id, from, envelope) in moves {
            let record = source
                .read_body(id, from.offset, from.size)
                .and_then(|body| {
                    format::encode_message(id, &envelope, &body).ok_or(SpoolError::TooLarge)
                });
            match record {
                Ok(record) => items.push(Item::Relocation { id, from, record }),
                Err(err) => {
                    tracing::error!(
                        id = %format_args!("{id:#x}"),
                        error = %err,
                        "cannot copy this message forward; it stays in its segment, which \
                         cannot be deleted until the message is removed",
                    );
                    self.unrelocatable.insert(id, from);
                }
            }
        }
        items
    }
}

/// Every `Spool` handle is gone.
struct Disconnected;
