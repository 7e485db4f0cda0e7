//! The files of the event log directory and their names.
//!
//! ```text
//! events.jsonl                               the live file, appended to by the writer
//! events-20261118T110640.123Z.jsonl          a rotated segment, waiting for compression
//! events-20261118T110640.123Z-1.jsonl.zst    a compressed segment (a second rotation in
//!                                            the same millisecond gets "-1", "-2", ...)
//! events-20261118T110640.123Z.jsonl.zst.tmp  a compression in progress (deleted at start-up)
//! ```
//!
//! The stamp is the UTC time of the rotation, so a segment holds only events whose `time` is
//! at or before it: readers skip whole segments older than `--since`, retention deletes by
//! it, and sorting by (stamp, sequence) gives the order the events were written in (as long
//! as the wall clock does not jump back). Names are valid on every filesystem (no `:`), and
//! sort as text in time order too, except that a `-<seq>` name sorts before its plain twin.
//!
//! Compression writes a complete `.zst` before the plain file is removed, so for a moment
//! (or after a crash at that moment) both may exist; they hold the same lines, and [`list`]
//! returns the plain one only.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader};
use std::os::unix::fs::DirEntryExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The file the writer appends to.
pub const LIVE: &str = "events.jsonl";

const PREFIX: &str = "events-";
const PLAIN: &str = ".jsonl";
const COMPRESSED: &str = ".jsonl.zst";
const TEMP: &str = ".jsonl.zst.tmp";

/// When a segment was rotated: milliseconds since the Unix epoch, then a sequence number
/// that tells apart rotations within one millisecond. Orders as the segments were written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp {
    pub unix_ms: u64,
    pub seq: u32,
}

impl Stamp {
    /// The first stamp after this one.
    pub fn next(self) -> Stamp {
        Stamp {
            unix_ms: self.unix_ms,
            seq: self.seq.saturating_add(1),
        }
    }

    /// The rotation time.
    pub fn time(self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(self.unix_ms)
    }

    /// `20261118T110640.123Z`, then `-<seq>` if `seq > 0`.
    fn text(self) -> String {
        let t = time::OffsetDateTime::UNIX_EPOCH
            + time::Duration::milliseconds(i64::try_from(self.unix_ms).unwrap_or(i64::MAX));
        let fmt = time::macros::format_description!(
            "[year][month][day]T[hour][minute][second].[subsecond digits:3]Z"
        );
        let base = t.format(&fmt).unwrap_or_default();
        match self.seq {
            0 => base,
            n => format!("{base}-{n}"),
        }
    }

    /// The inverse of [`Stamp::text`]; `None` for anything else.
    fn parse(text: &str) -> Option<Stamp> {
        let (base, seq) = match text.split_once('-') {
            Some((base, seq)) if !seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit()) => {
                (base, seq.parse().ok()?)
            }
            Some(_) => return None,
            None => (text, 0),
        };
        // YYYYMMDDTHHMMSS.mmmZ
        let b = base.as_bytes();
        if b.len() != 20 || b[8] != b'T' || b[15] != b'.' || b[19] != b'Z' {
            return None;
        }
        let num = |range: std::ops::Range<usize>| -> Option<u32> {
            let s = base.get(range)?;
            if s.bytes().all(|c| c.is_ascii_digit()) {
                s.parse().ok()
            } else {
                None
            }
        };
        let year = i32::try_from(num(0..4)?).ok()?;
        let month = time::Month::try_from(u8::try_from(num(4..6)?).ok()?).ok()?;
        let date =
            time::Date::from_calendar_date(year, month, u8::try_from(num(6..8)?).ok()?).ok()?;
        let hms = time::Time::from_hms_milli(
            u8::try_from(num(9..11)?).ok()?,
            u8::try_from(num(11..13)?).ok()?,
            u8::try_from(num(13..15)?).ok()?,
            u16::try_from(num(16..19)?).ok()?,
        )
        .ok()?;
        let t = time::PrimitiveDateTime::new(date, hms).assume_utc();
        let ms = t.unix_timestamp_nanos() / 1_000_000;
        let stamp = Stamp {
            unix_ms: u64::try_from(ms).ok()?,
            seq,
        };
        // Reject non-canonical spellings (say "-0"), so one stamp has exactly one name.
        (stamp.text() == text).then_some(stamp)
    }
}

/// The file name of the segment rotated at `stamp`.
pub fn file_name(stamp: Stamp, compressed: bool) -> String {
    let ext = if compressed { COMPRESSED } else { PLAIN };
    format!("{PREFIX}{}{ext}", stamp.text())
}

/// The path of the in-progress compression of `stamp`.
pub fn temp_path(dir: &Path, stamp: Stamp) -> PathBuf {
    dir.join(format!("{PREFIX}{}{TEMP}", stamp.text()))
}

/// What a file in the log directory is, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    Live,
    Plain(Stamp),
    Compressed(Stamp),
    /// A compression that did not finish.
    Temp(Stamp),
}

/// Classifies a file name; `None` for files that are not the event log's.
pub fn classify(name: &str) -> Option<Entry> {
    if name == LIVE {
        return Some(Entry::Live);
    }
    let rest = name.strip_prefix(PREFIX)?;
    if let Some(stamp) = rest.strip_suffix(TEMP) {
        return Stamp::parse(stamp).map(Entry::Temp);
    }
    if let Some(stamp) = rest.strip_suffix(COMPRESSED) {
        return Stamp::parse(stamp).map(Entry::Compressed);
    }
    let stamp = rest.strip_suffix(PLAIN)?;
    Stamp::parse(stamp).map(Entry::Plain)
}

/// A rotated segment as found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub stamp: Stamp,
    pub path: PathBuf,
    pub compressed: bool,
    /// A compressed copy exists next to the plain file (compression just finished, or a crash
    /// interrupted the clean-up).
    pub also_compressed: bool,
    /// The inode of the plain file, which is the inode the live file had: a reader holding
    /// the live file open recognises it after rotation by this.
    pub plain_ino: Option<u64>,
}

impl Segment {
    /// Opens the segment for reading lines, decompressing if need be. A plain segment that
    /// was compressed (and removed) since it was listed is read from its compressed copy.
    pub fn open(&self) -> io::Result<Box<dyn BufRead + Send>> {
        const BUF: usize = 256 * 1024;
        if !self.compressed {
            match std::fs::File::open(&self.path) {
                Ok(f) => return Ok(Box::new(BufReader::with_capacity(BUF, f))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        let path = match self.path.parent() {
            Some(dir) if !self.compressed => dir.join(file_name(self.stamp, true)),
            _ => self.path.clone(),
        };
        let f = std::fs::File::open(path)?;
        Ok(Box::new(BufReader::with_capacity(
            BUF,
            super::compress::Decoder::new(BufReader::with_capacity(BUF, f)),
        )))
    }
}

/// Every rotated segment in `dir`, oldest first, one per stamp (the plain file when both
/// forms exist). The live file and unfinished compressions are not included.
pub fn list(dir: &Path) -> io::Result<Vec<Segment>> {
    let mut by_stamp: BTreeMap<Stamp, Segment> = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let (stamp, compressed) = match classify(&name) {
            Some(Entry::Plain(s)) => (s, false),
            Some(Entry::Compressed(s)) => (s, true),
            _ => continue,
        };
        let path = entry.path();
        let plain_ino = (!compressed).then(|| entry.ino());
        by_stamp
            .entry(stamp)
            .and_modify(|seg| {
                seg.also_compressed = true;
                if seg.compressed && !compressed {
                    seg.path = path.clone();
                    seg.compressed = false;
                    seg.plain_ino = plain_ino;
                }
            })
            .or_insert(Segment {
                stamp,
                path,
                compressed,
                also_compressed: false,
                plain_ino,
            });
    }
    Ok(by_stamp.into_values().collect())
}

/// A name for the segment rotated at `now` that no file in `dir` has, in any form.
pub fn fresh(dir: &Path, now: SystemTime) -> PathBuf {
    let unix_ms = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let mut stamp = Stamp { unix_ms, seq: 0 };
    loop {
        let taken = [
            dir.join(file_name(stamp, false)),
            dir.join(file_name(stamp, true)),
            temp_path(dir, stamp),
        ]
        .iter()
        .any(|p| p.exists());
        if !taken {
            return dir.join(file_name(stamp, false));
        }
        stamp.seq += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(unix_ms: u64, seq: u32) -> Stamp {
        Stamp { unix_ms, seq }
    }

    #[test]
    fn names_round_trip_and_sort_by_time_then_sequence() {
        let s = stamp(1_795_000_000_123, 0);
        assert_eq!(file_name(s, false), "events-20261118T110640.123Z.jsonl");
        assert_eq!(file_name(s, true), "events-20261118T110640.123Z.jsonl.zst");
        assert_eq!(
            file_name(stamp(1_795_000_000_123, 2), true),
            "events-20261118T110640.123Z-2.jsonl.zst"
        );
        for (s, compressed) in [
            (s, false),
            (stamp(0, 0), true),
            (stamp(1_795_000_000_123, 17), true),
        ] {
            let name = file_name(s, compressed);
            let want = if compressed {
                Entry::Compressed(s)
            } else {
                Entry::Plain(s)
            };
            assert_eq!(classify(&name), Some(want), "{name}");
        }
        assert_eq!(
            classify("events-20261118T110640.123Z-1.jsonl.zst.tmp"),
            Some(Entry::Temp(stamp(1_795_000_000_123, 1)))
        );
        assert_eq!(classify("events.jsonl"), Some(Entry::Live));
        assert!(stamp(5, 9) < stamp(6, 0));
        assert!(stamp(6, 0) < stamp(6, 1));
        // Text order agrees with stamp order for same-width times.
        assert!(
            file_name(stamp(1_795_000_000_123, 0), false)
                < file_name(stamp(1_795_000_001_000, 0), false)
        );
    }

    #[test]
    fn foreign_and_non_canonical_names_are_ignored() {
        for name in [
            "events.jsonl.1",
            "events-.jsonl",
            "events-20261118T110640Z.jsonl",
            "events-20261318T110640.123Z.jsonl",
            "events-20261118T110640.123Z-.jsonl",
            "events-20261118T110640.123Z-0.jsonl",
            "events-20261118T110640.123Z-x.jsonl",
            "events-20261118T110640.123Z.log",
            "other.jsonl",
            "events-20261118t110640.123Z.jsonl",
        ] {
            assert_eq!(classify(name), None, "{name}");
        }
    }

    #[test]
    fn list_orders_segments_and_prefers_the_plain_copy() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let touch = |name: String| std::fs::write(d.join(name), b"x\n").unwrap();
        touch(file_name(stamp(2000, 0), true));
        touch(file_name(stamp(1000, 1), false));
        touch(file_name(stamp(1000, 0), true));
        touch(file_name(stamp(3000, 0), false));
        touch(file_name(stamp(3000, 0), true));
        touch(LIVE.to_string());
        std::fs::write(temp_path(d, stamp(4000, 0)), b"partial").unwrap();
        touch("notes.txt".into());
        let segs = list(d).unwrap();
        let got: Vec<_> = segs.iter().map(|s| (s.stamp, s.compressed)).collect();
        assert_eq!(
            got,
            vec![
                (stamp(1000, 0), true),
                (stamp(1000, 1), false),
                (stamp(2000, 0), true),
                (stamp(3000, 0), false),
            ]
        );
        assert!(segs[3].also_compressed);
        assert!(!segs[0].also_compressed);
    }

    #[test]
    fn fresh_names_never_reuse_a_stamp_in_any_form() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let now = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        let first = fresh(d, now);
        assert_eq!(first, d.join("events-20261118T110640.123Z.jsonl"));
        std::fs::write(d.join(file_name(stamp(1_795_000_000_123, 0), true)), b"").unwrap();
        std::fs::write(temp_path(d, stamp(1_795_000_000_123, 1)), b"").unwrap();
        assert_eq!(fresh(d, now), d.join("events-20261118T110640.123Z-2.jsonl"));
    }
}
