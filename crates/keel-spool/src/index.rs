//! The in-memory index: where every live message's current `Message` record is, its latest
//! envelope, and per-segment accounting (size, live records) that drives segment deletion and
//! compaction.
//!
//! The index is the spool's logical state. It lives behind one mutex in [`crate::Shared`];
//! readers hold it only long enough to copy a location and clone an `Arc<SegmentFile>`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::MessageId;
use crate::segment::SegmentFile;

/// Where a message's `Message` record is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Location {
    pub(crate) seq: u64,
    pub(crate) offset: u64,
    /// Size of the whole record, frame header included.
    pub(crate) size: usize,
    pub(crate) body_len: u64,
}

#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) location: Location,
    /// The latest envelope: from the record, or from a later `update`.
    pub(crate) envelope: Vec<u8>,
}

#[derive(Debug)]
pub(crate) struct SegmentState {
    pub(crate) file: Arc<SegmentFile>,
    /// Bytes in the file (header included).
    pub(crate) size: u64,
    /// Live messages whose current record is in this segment, by record offset (file order, so
    /// compaction reads sequentially).
    pub(crate) live: BTreeMap<u64, MessageId>,
    /// Total size of those records.
    pub(crate) live_bytes: u64,
    /// Whether the segment may hold `Update`/`Remove` records. A dead segment without them can
    /// be deleted out of order: it cancels nothing.
    pub(crate) has_mutations: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Index {
    messages: HashMap<MessageId, Entry>,
    segments: BTreeMap<u64, SegmentState>,
}

impl Index {
    pub(crate) fn add_segment(&mut self, file: Arc<SegmentFile>, size: u64) {
        let seq = file.seq();
        self.segments.insert(
            seq,
            SegmentState {
                file,
                size,
                live: BTreeMap::new(),
                live_bytes: 0,
                has_mutations: false,
            },
        );
    }

    /// Forgets a segment. The caller has made sure nothing live is left in it.
    pub(crate) fn remove_segment(&mut self, seq: u64) -> Option<SegmentState> {
        let state = self.segments.remove(&seq);
        debug_assert!(state.as_ref().is_none_or(|s| s.live.is_empty()));
        state
    }

    pub(crate) fn set_segment_size(&mut self, seq: u64, size: u64) {
        if let Some(segment) = self.segments.get_mut(&seq) {
            segment.size = size;
        }
    }

    pub(crate) fn mark_mutations(&mut self, seq: u64) {
        if let Some(segment) = self.segments.get_mut(&seq) {
            segment.has_mutations = true;
        }
    }

    pub(crate) fn segment(&self, seq: u64) -> Option<&SegmentState> {
        self.segments.get(&seq)
    }

    pub(crate) fn segments(&self) -> impl Iterator<Item = &SegmentState> {
        self.segments.values()
    }

    pub(crate) fn oldest_segment(&self) -> Option<&SegmentState> {
        self.segments.values().next()
    }

    pub(crate) fn get(&self, id: MessageId) -> Option<&Entry> {
        self.messages.get(&id)
    }

    pub(crate) fn contains(&self, id: MessageId) -> bool {
        self.messages.contains_key(&id)
    }

    pub(crate) fn messages(&self) -> impl Iterator<Item = (MessageId, &Entry)> {
        self.messages.iter().map(|(&id, entry)| (id, entry))
    }

    /// Records a (new or replacing) `Message` record for `id`.
    pub(crate) fn insert(&mut self, id: MessageId, location: Location, envelope: Vec<u8>) {
        if let Some(old) = self.messages.insert(id, Entry { location, envelope }) {
            self.unlink(id, old.location);
        }
        self.link(id, location);
    }

    /// Replaces the envelope of a live message. Returns false if `id` is not live.
    pub(crate) fn update(&mut self, id: MessageId, envelope: Vec<u8>) -> bool {
        match self.messages.get_mut(&id) {
            Some(entry) => {
                entry.envelope = envelope;
                true
            }
            None => false,
        }
    }

    /// Forgets a live message. Returns false if `id` was not live.
    pub(crate) fn remove(&mut self, id: MessageId) -> bool {
        match self.messages.remove(&id) {
            Some(entry) => {
                self.unlink(id, entry.location);
                true
            }
            None => false,
        }
    }

    /// Points `id` at a relocated copy of its record, if it is still live at `from` (it may have
    /// been removed, or removed and appended again, while the copy was being written).
    pub(crate) fn relocate(&mut self, id: MessageId, from: Location, to: Location) -> bool {
        match self.messages.get_mut(&id) {
            Some(entry) if entry.location == from => {
                entry.location = to;
                self.unlink(id, from);
                self.link(id, to);
                true
            }
            _ => false,
        }
    }

    pub(crate) fn live_messages(&self) -> usize {
        self.messages.len()
    }

    fn link(&mut self, id: MessageId, location: Location) {
        if let Some(segment) = self.segments.get_mut(&location.seq) {
            segment.live.insert(location.offset, id);
            segment.live_bytes += location.size as u64;
        } else {
            debug_assert!(
                false,
                "message {id:#x} indexed in unknown segment {}",
                location.seq
            );
        }
    }

    fn unlink(&mut self, id: MessageId, location: Location) {
        if let Some(segment) = self.segments.get_mut(&location.seq)
            && segment.live.remove(&location.offset).is_some()
        {
            segment.live_bytes -= location.size as u64;
        } else {
            debug_assert!(
                false,
                "message {id:#x} missing from segment {}",
                location.seq
            );
        }
    }
}
