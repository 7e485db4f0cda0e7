//! The spool's error type.

use std::io;
use std::path::PathBuf;

use crate::format::MAX_RECORD_LEN;

/// Everything that can go wrong in the spool.
///
/// Messages are written for the operator reading the log: they say which file, what the spool
/// was doing, and (for corruption) where.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// An I/O operation on a spool file or directory failed (disk full, I/O error, permissions).
    #[error("spool I/O error: could not {op} {}: {source}", path.display())]
    Io {
        /// What the spool was doing, e.g. "write to", "sync", "open".
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// Another spool (another process, or another `Spool::open` in this process) holds the
    /// directory's lock file.
    #[error(
        "spool directory {} is locked: another keel instance is using it (lock file {}/LOCK)",
        dir.display(),
        dir.display()
    )]
    Locked {
        /// The spool directory.
        dir: PathBuf,
    },

    /// The message is not (or no longer) live in the spool.
    #[error("message not found in the spool (never appended, or already removed)")]
    NotFound,

    /// The spool was closed; no further operations are accepted.
    #[error("the spool is closed")]
    Closed,

    /// A segment holds data the spool cannot interpret and must not ignore (an unknown format
    /// version, a file that is not a keel segment), or a record failed its checksum when read.
    #[error("spool segment {} is corrupt at offset {offset}: {reason}", segment.display())]
    Corrupt {
        /// The segment file.
        segment: PathBuf,
        /// Byte offset of the bad header or record inside the file.
        offset: u64,
        /// What is wrong there.
        reason: String,
    },

    /// The message (envelope plus body) does not fit in one spool record.
    #[error("message too large for the spool: a record is limited to {MAX_RECORD_LEN} bytes")]
    TooLarge,
}

impl SpoolError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        SpoolError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// A copy of this error, so one failed batch can report the same cause to every append in it.
    pub(crate) fn duplicate(&self) -> SpoolError {
        match self {
            SpoolError::Io { op, path, source } => SpoolError::Io {
                op,
                path: path.clone(),
                source: clone_io_error(source),
            },
            SpoolError::Locked { dir } => SpoolError::Locked { dir: dir.clone() },
            SpoolError::NotFound => SpoolError::NotFound,
            SpoolError::Closed => SpoolError::Closed,
            SpoolError::Corrupt {
                segment,
                offset,
                reason,
            } => SpoolError::Corrupt {
                segment: segment.clone(),
                offset: *offset,
                reason: reason.clone(),
            },
            SpoolError::TooLarge => SpoolError::TooLarge,
        }
    }
}

fn clone_io_error(err: &io::Error) -> io::Error {
    match err.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(err.kind(), err.to_string()),
    }
}
