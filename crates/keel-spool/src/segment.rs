//! Segment files: creating, opening, listing and reading them, and syncing the directory that
//! holds them.
//!
//! A [`SegmentFile`] is shared as `Arc<SegmentFile>` between the writer thread and readers: a
//! reader that looked a message up keeps the file open even if the writer deletes the segment
//! a moment later (after relocating the message), so `read_body` never races with compaction.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::MessageId;
use crate::error::SpoolError;
use crate::format::{self, Record, SEGMENT_HEADER};

/// An open segment file.
#[derive(Debug)]
pub(crate) struct SegmentFile {
    seq: u64,
    path: PathBuf,
    file: File,
}

impl SegmentFile {
    /// Creates segment `seq` with its header, durably: the header is synced and so is the
    /// directory entry. On failure nothing is left behind (best effort: a leftover file without
    /// a complete header is recognised and deleted by recovery).
    pub(crate) fn create(dir: &Path, seq: u64) -> Result<SegmentFile, SpoolError> {
        let path = dir.join(format::segment_file_name(seq));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| SpoolError::io("create segment", &path, e))?;
        let segment = SegmentFile { seq, path, file };
        let init = segment
            .file
            .write_all_at(&SEGMENT_HEADER, 0)
            .map_err(|e| SpoolError::io("write header of", &segment.path, e))
            .and_then(|()| segment.sync_data())
            .and_then(|()| sync_dir(dir));
        if let Err(err) = init {
            if let Err(cleanup) = fs::remove_file(&segment.path) {
                tracing::warn!(
                    path = %segment.path.display(),
                    error = %cleanup,
                    "could not remove a segment file that failed to initialise",
                );
            }
            return Err(err);
        }
        Ok(segment)
    }

    /// Opens an existing segment read-only.
    pub(crate) fn open(path: PathBuf, seq: u64) -> Result<SegmentFile, SpoolError> {
        let file = File::open(&path).map_err(|e| SpoolError::io("open segment", &path, e))?;
        Ok(SegmentFile { seq, path, file })
    }

    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    pub(crate) fn sync_data(&self) -> Result<(), SpoolError> {
        self.file
            .sync_data()
            .map_err(|e| SpoolError::io("sync", &self.path, e))
    }

    /// Reads the body of message `id` from its record at `offset` (`size` bytes, frame
    /// included), after checking the record's checksum: a bit flipped on disk surfaces as
    /// [`SpoolError::Corrupt`] instead of being delivered.
    pub(crate) fn read_body(
        &self,
        id: MessageId,
        offset: u64,
        size: usize,
    ) -> Result<Vec<u8>, SpoolError> {
        let mut record = vec![0; size];
        self.file
            .read_exact_at(&mut record, offset)
            .map_err(|e| SpoolError::io("read", &self.path, e))?;
        let body_len = match format::decode(&record) {
            Ok((
                Record::Message {
                    id: found, body, ..
                },
                n,
            )) if found == id && n == size => body.len(),
            Ok(_) => return Err(self.corrupt(offset, &"expected this message's record here")),
            Err(err) => return Err(self.corrupt(offset, &err)),
        };
        // The body is the last field of a message record: keep just that, in place.
        record.drain(..size - body_len);
        Ok(record)
    }

    pub(crate) fn corrupt(&self, offset: u64, reason: &dyn std::fmt::Display) -> SpoolError {
        SpoolError::Corrupt {
            segment: self.path.clone(),
            offset,
            reason: reason.to_string(),
        }
    }
}

/// Makes creations and deletions of files in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| SpoolError::io("sync directory", dir, e))
}

/// Deletes a segment file and syncs the directory, so the deletion is durable before the caller
/// deletes anything newer (see the ordering rule in `writer`).
pub(crate) fn delete(dir: &Path, path: &Path) -> Result<(), SpoolError> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(SpoolError::io("delete segment", path, e)),
    }
    sync_dir(dir)
}

/// Lists the segment files in `dir`, sorted by sequence number. Other files are ignored.
pub(crate) fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, SpoolError> {
    let entries = fs::read_dir(dir).map_err(|e| SpoolError::io("list", dir, e))?;
    let mut segments = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| SpoolError::io("list", dir, e))?;
        let name = entry.file_name();
        if let Some(seq) = name.to_str().and_then(format::parse_segment_file_name) {
            segments.push((seq, entry.path()));
        }
    }
    segments.sort_unstable_by_key(|&(seq, _)| seq);
    Ok(segments)
}
