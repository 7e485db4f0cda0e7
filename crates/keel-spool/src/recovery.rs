//! Rebuilding the index from the segment files at open.
//!
//! Segments are scanned in sequence order and their records applied in file order, so a later
//! record always overrides an earlier one: a relocated copy of a message replaces the original,
//! an `Update` replaces the envelope of whatever copy is current, and a `Remove` ends the message.
//! `Update` and `Remove` records for ids that are not live are ignored (their message's segment
//! was already deleted).
//!
//! Invalid records are handled by what they look like and where they are:
//!
//! * **A damaged record followed by a valid one** (plausible length, bad checksum or payload,
//!   and a record with a good checksum right after it): bit rot in one record. That record is
//!   skipped, with an error in the log and a count in [`crate::SpoolStats::corrupt_segments`],
//!   and the scan goes on. Skipping only the one record keeps every later message: the framing
//!   is intact, so nothing forces us to give up on the rest. (A crash can also leave this shape
//!   inside the unacknowledged tail, when pages of one write reach the disk out of order; keeping
//!   the valid records there errs towards a duplicate, never towards a loss.)
//! * **Otherwise, at the end of the last segment**: a torn write. The writer only acknowledges
//!   appends after `fdatasync`, so whatever follows the last valid record was never acknowledged.
//!   The file is truncated to the last valid record (and synced) and recovery goes on.
//! * **Otherwise, in any other segment**: real corruption with broken framing (the writer syncs a
//!   segment before it starts the next one). The rest of that segment is skipped, with an error in
//!   the log and a count in `corrupt_segments`, and recovery goes on: refusing to start would hold
//!   every other message hostage.
//!
//! A segment whose header is incomplete was being created when the process died; it holds nothing
//! and is deleted. A segment with an unknown format version or foreign magic makes recovery
//! refuse (`SpoolError::Corrupt`): skipping it would eventually delete it as dead.

use std::fs::OpenOptions;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use crate::error::SpoolError;
use crate::format::{self, HeaderCheck, Record, SEGMENT_HEADER_LEN};
use crate::index::{Index, Location};
use crate::segment::{self, SegmentFile};

/// What recovery found.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub(crate) index: Index,
    /// Sequence number for the next segment to create.
    pub(crate) next_seq: u64,
    /// Segments in which corruption made recovery skip data.
    pub(crate) corrupt_segments: u64,
    /// Bytes cut off the end of the last segment (a torn write).
    pub(crate) torn_bytes: u64,
}

pub(crate) fn recover(dir: &Path) -> Result<Recovered, SpoolError> {
    let listed = segment::list(dir)?;
    let last_seq = listed.last().map(|&(seq, _)| seq);
    let next_seq = match last_seq {
        None => 1,
        // The writer needs room for at least two more numbers (the new active and its successor).
        Some(seq) => seq
            .checked_add(1)
            .filter(|&next| next < u64::MAX)
            .ok_or_else(|| SpoolError::Corrupt {
                segment: dir.join(format::segment_file_name(seq)),
                offset: 0,
                reason: "segment sequence numbers are exhausted".into(),
            })?,
    };

    let mut recovered = Recovered {
        index: Index::default(),
        next_seq,
        corrupt_segments: 0,
        torn_bytes: 0,
    };
    for (seq, path) in listed {
        let segment = SegmentFile::open(path, seq)?;
        scan_segment(dir, segment, Some(seq) == last_seq, &mut recovered)?;
    }

    tracing::info!(
        dir = %dir.display(),
        live_messages = recovered.index.live_messages(),
        segments = recovered.index.segments().count(),
        corrupt_segments = recovered.corrupt_segments,
        torn_bytes = recovered.torn_bytes,
        "spool recovered",
    );
    Ok(recovered)
}

fn scan_segment(
    dir: &Path,
    segment: SegmentFile,
    is_last: bool,
    recovered: &mut Recovered,
) -> Result<(), SpoolError> {
    let mut data = Vec::new();
    let mut file = segment.file();
    file.read_to_end(&mut data)
        .map_err(|e| SpoolError::io("read", segment.path(), e))?;

    match format::check_header(&data) {
        HeaderCheck::Valid => {}
        HeaderCheck::Unfinished => {
            tracing::warn!(
                segment = %segment.path().display(),
                "deleting a segment whose creation was interrupted (it holds no records)",
            );
            return segment::delete(dir, segment.path());
        }
        HeaderCheck::UnsupportedVersion(version) => {
            return Err(segment.corrupt(
                0,
                &format_args!(
                    "unsupported segment format version {:?} (this keel reads version {:?}); \
                     was the spool written by a newer keel?",
                    char::from(version),
                    char::from(format::FORMAT_VERSION),
                ),
            ));
        }
        HeaderCheck::Foreign => {
            return Err(segment.corrupt(
                0,
                &"not a keel spool segment (bad magic); move it out of the spool directory",
            ));
        }
    }

    let seq = segment.seq();
    let segment = Arc::new(segment);
    recovered
        .index
        .add_segment(Arc::clone(&segment), data.len() as u64);

    let mut offset = SEGMENT_HEADER_LEN as usize;
    let mut damaged = false;
    while offset < data.len() {
        let rest = &data[offset..];
        let err = match format::decode(rest) {
            Ok((record, size)) => {
                apply(&mut recovered.index, seq, offset as u64, size, record);
                offset += size;
                continue;
            }
            Err(err) => err,
        };
        // The length is plausible but the contents are bad, and a valid record follows: a
        // damaged record (bit rot), not the end of the data. Skip just that one.
        if let Some(size) = format::framed_len(rest)
            && offset + size < data.len()
            && format::decode(&data[offset + size..]).is_ok()
        {
            tracing::error!(
                segment = %segment.path().display(),
                offset,
                error = %err,
                "skipping a corrupt record inside a spool segment (if it was a message, that \
                 message is lost)",
            );
            damaged = true;
            offset += size;
            continue;
        }
        if is_last {
            let torn = data.len() - offset;
            tracing::warn!(
                segment = %segment.path().display(),
                offset,
                torn_bytes = torn,
                error = %err,
                "truncating a torn write at the end of the last segment (never acknowledged)",
            );
            truncate(segment.path(), offset as u64)?;
            recovered.torn_bytes += torn as u64;
            recovered.index.set_segment_size(seq, offset as u64);
        } else {
            tracing::error!(
                segment = %segment.path().display(),
                offset,
                skipped_bytes = data.len() - offset,
                error = %err,
                "corrupt data inside a spool segment; skipping the rest of this segment \
                 (messages stored after this point in it are lost)",
            );
            damaged = true;
        }
        break;
    }
    if damaged {
        recovered.corrupt_segments += 1;
    }
    Ok(())
}

fn apply(index: &mut Index, seq: u64, offset: u64, size: usize, record: Record<'_>) {
    match record {
        Record::Message { id, envelope, body } => {
            let location = Location {
                seq,
                offset,
                size,
                body_len: body.len() as u64,
            };
            index.insert(id, location, envelope.to_vec());
        }
        Record::Update { id, envelope } => {
            index.mark_mutations(seq);
            index.update(id, envelope.to_vec());
        }
        Record::Remove { id } => {
            index.mark_mutations(seq);
            index.remove(id);
        }
    }
}

fn truncate(path: &Path, len: u64) -> Result<(), SpoolError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| SpoolError::io("open for truncation", path, e))?;
    file.set_len(len)
        .map_err(|e| SpoolError::io("truncate", path, e))?;
    file.sync_data()
        .map_err(|e| SpoolError::io("sync", path, e))
}
