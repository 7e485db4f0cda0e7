//! Tests of the whole spool against a real directory (in a temp dir).
//!
//! They live inside the crate so they can craft on-disk damage with the real encoder and inject
//! I/O faults into the writer.

mod api;
mod faults;
mod group_commit;
mod lifecycle;
mod model;
mod recovery;

use std::fs;
use std::path::{Path, PathBuf};

use crate::{MessageId, RecoveredMessage, Spool, SpoolOptions};

/// Small segments, so a few hundred KiB of traffic exercises rotation, deletion and compaction.
pub(crate) fn small_segments() -> SpoolOptions {
    SpoolOptions {
        segment_size: 64 << 10,
        max_batch_bytes: 64 << 10,
    }
}

pub(crate) fn open(dir: &Path, opts: SpoolOptions) -> (Spool, Vec<RecoveredMessage>) {
    match Spool::open(dir, opts) {
        Ok(opened) => opened,
        Err(err) => panic!("open {}: {err}", dir.display()),
    }
}

/// A body that differs per message and per byte, so misplaced reads show.
pub(crate) fn body(id: MessageId, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (id as usize).wrapping_mul(31).wrapping_add(i) as u8)
        .collect()
}

pub(crate) fn envelope(id: MessageId, version: u32) -> Vec<u8> {
    format!("envelope of {id} v{version}").into_bytes()
}

/// Segment files in sequence order.
pub(crate) fn segment_files(dir: &Path) -> Vec<PathBuf> {
    crate::segment::list(dir)
        .expect("list segments")
        .into_iter()
        .map(|(_, path)| path)
        .collect()
}

pub(crate) fn last_segment(dir: &Path) -> PathBuf {
    segment_files(dir).pop().expect("at least one segment")
}

pub(crate) fn file_len(path: &Path) -> u64 {
    fs::metadata(path).expect("stat").len()
}

pub(crate) fn ids(recovered: &[RecoveredMessage]) -> Vec<MessageId> {
    recovered.iter().map(|m| m.id).collect()
}

/// Copies the regular files of `from` into `to` (the spool has no subdirectories).
pub(crate) fn copy_dir(from: &Path, to: &Path) {
    for entry in fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}

/// Byte offset of the first occurrence of `needle` in `haystack`.
pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
