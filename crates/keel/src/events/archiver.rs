//! The archiver thread: compresses rotated segments and deletes old ones.
//!
//! It runs apart from the writer so that compressing a 256 MB segment never delays an event
//! line, and it is the only code that deletes or creates segment files other than the
//! writer's rename, so compression and retention never race each other.
//!
//! Compression is crash-safe: the `.zst` is written under a temporary name, fsynced,
//! renamed into place and the directory fsynced before the plain file is removed. Whatever
//! a crash leaves behind is settled at the next start ([`Archiver::recover`]): unfinished
//! temporary files are deleted, a plain file whose `.zst` is complete is removed, and plain
//! segments still waiting are compressed.
//!
//! Retention runs after each compression and every few minutes: segments whose rotation
//! stamp is older than `retention` are deleted, then the oldest beyond `max_files`.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use super::compress;
use super::segment::{self, Entry, Segment};

/// How often retention is applied when nothing is rotated.
const PRUNE_EVERY: Duration = Duration::from_secs(300);

/// What to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    pub max_age: Option<Duration>,
    pub max_files: Option<usize>,
}

pub struct Archiver {
    dir: PathBuf,
    retention: Retention,
}

impl Archiver {
    pub fn new(dir: &Path, retention: Retention) -> Archiver {
        Archiver {
            dir: dir.to_path_buf(),
            retention,
        }
    }

    /// Starts the thread. It compresses each path sent to it, and ends (after finishing the
    /// queue) when the sender is dropped.
    pub fn spawn(self) -> io::Result<(mpsc::Sender<PathBuf>, std::thread::JoinHandle<()>)> {
        let (tx, rx) = mpsc::channel::<PathBuf>();
        let handle = std::thread::Builder::new()
            .name("keel-events-archive".into())
            .spawn(move || self.run(rx))?;
        Ok((tx, handle))
    }

    fn run(self, rx: mpsc::Receiver<PathBuf>) {
        self.recover();
        self.prune(SystemTime::now());
        loop {
            match rx.recv_timeout(PRUNE_EVERY) {
                Ok(path) => {
                    self.compress(&path);
                    // A burst of rotations: compress them all, then prune once.
                    while let Ok(path) = rx.try_recv() {
                        self.compress(&path);
                    }
                    self.prune(SystemTime::now());
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.prune(SystemTime::now());
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Settles what an earlier run left half done, then compresses waiting segments.
    pub fn recover(&self) {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot list the event log directory");
                return;
            }
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if let Some(Entry::Temp(_)) = name.to_str().and_then(segment::classify) {
                remove(&entry.path());
            }
        }
        let segments = match segment::list(&self.dir) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot list the event log directory");
                return;
            }
        };
        for seg in segments.iter().filter(|s| !s.compressed) {
            if seg.also_compressed {
                remove(&seg.path);
            } else {
                self.compress(&seg.path);
            }
        }
    }

    /// Compresses one plain segment into its `.zst` and removes the plain file. On failure
    /// the plain file stays (readable, and retried at the next start).
    pub fn compress(&self, plain: &Path) {
        let Some(Entry::Plain(stamp)) = plain
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(segment::classify)
        else {
            tracing::warn!(path = %plain.display(), "not a rotated event log segment; not compressing it");
            return;
        };
        let temp = segment::temp_path(&self.dir, stamp);
        let done = self.dir.join(segment::file_name(stamp, true));
        let result = compress::compress_file(plain, &temp)
            .and_then(|_| std::fs::rename(&temp, &done))
            .and_then(|()| sync_dir(&self.dir));
        match result {
            Ok(()) => remove(plain),
            Err(e) => {
                remove(&temp);
                tracing::warn!(path = %plain.display(), error = %e,
                    "cannot compress an event log segment; it stays uncompressed");
            }
        }
    }

    /// Deletes segments past the retention limits. Returns how many were deleted.
    pub fn prune(&self, now: SystemTime) -> usize {
        let segments = match segment::list(&self.dir) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot list the event log directory");
                return 0;
            }
        };
        let doomed = expired(&segments, self.retention, now);
        for seg in &doomed {
            // Both forms, whichever exist.
            remove(&self.dir.join(segment::file_name(seg.stamp, false)));
            remove(&self.dir.join(segment::file_name(seg.stamp, true)));
        }
        if !doomed.is_empty() {
            tracing::debug!(deleted = doomed.len(), "event log retention");
        }
        doomed.len()
    }
}

/// The segments (oldest first in `segments`) that retention deletes at `now`.
fn expired(segments: &[Segment], retention: Retention, now: SystemTime) -> Vec<Segment> {
    let too_old = |s: &Segment| {
        retention.max_age.is_some_and(|age| {
            now.duration_since(s.stamp.time())
                .is_ok_and(|elapsed| elapsed > age)
        })
    };
    let over_count = retention
        .max_files
        .map_or(0, |max| segments.len().saturating_sub(max));
    segments
        .iter()
        .enumerate()
        .filter(|(i, s)| *i < over_count || too_old(s))
        .map(|(_, s)| s.clone())
        .collect()
}

fn remove(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot delete an event log file")
        }
    }
}

/// Makes renames and new files in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::segment::{Stamp, file_name, temp_path};
    use super::*;

    const HOUR_MS: u64 = 3_600_000;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    fn stamp(hours: u64) -> Stamp {
        Stamp {
            unix_ms: 1_795_000_000_000 + hours * HOUR_MS,
            seq: 0,
        }
    }

    #[test]
    fn retention_deletes_by_age_and_by_count() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for h in 0..6 {
            std::fs::write(d.join(file_name(stamp(h), h % 2 == 0)), b"x\n").unwrap();
        }
        std::fs::write(d.join(segment::LIVE), b"live\n").unwrap();
        let now = stamp(6).time();
        // Older than 3.5 hours: segments 0, 1, 2.
        let a = Archiver::new(
            d,
            Retention {
                max_age: Some(Duration::from_millis(3 * HOUR_MS + HOUR_MS / 2)),
                max_files: None,
            },
        );
        assert_eq!(a.prune(now), 3);
        assert_eq!(
            names(d),
            vec![
                "events-20261118T140640.000Z.jsonl".to_string(),
                "events-20261118T150640.000Z.jsonl.zst".to_string(),
                "events-20261118T160640.000Z.jsonl".to_string(),
                "events.jsonl".to_string(),
            ]
        );
        let a = Archiver::new(
            d,
            Retention {
                max_age: None,
                max_files: Some(1),
            },
        );
        assert_eq!(a.prune(now), 2);
        assert_eq!(
            names(d),
            vec![
                "events-20261118T160640.000Z.jsonl".to_string(),
                "events.jsonl".to_string()
            ]
        );
        // Nothing configured: nothing deleted, and the live file is never touched.
        assert_eq!(Archiver::new(d, Retention::default()).prune(now), 0);
        let a = Archiver::new(
            d,
            Retention {
                max_age: Some(Duration::from_millis(1)),
                max_files: None,
            },
        );
        assert_eq!(a.prune(now), 1);
        assert_eq!(names(d), vec!["events.jsonl".to_string()]);
    }

    #[test]
    fn recovery_finishes_what_a_crash_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // A compression that never finished...
        std::fs::write(d.join(file_name(stamp(0), false)), b"zero\n").unwrap();
        std::fs::write(temp_path(d, stamp(0)), b"\x28\xb5partial").unwrap();
        // ...one that finished but did not remove the plain file...
        std::fs::write(d.join(file_name(stamp(1), false)), b"one\n").unwrap();
        compress::compress_file(
            &d.join(file_name(stamp(1), false)),
            &d.join(file_name(stamp(1), true)),
        )
        .unwrap();
        // ...and one waiting.
        std::fs::write(d.join(file_name(stamp(2), false)), b"two\n").unwrap();
        Archiver::new(d, Retention::default()).recover();
        assert_eq!(
            names(d),
            (0..3)
                .map(|h| file_name(stamp(h), true))
                .collect::<Vec<_>>()
        );
        for (h, want) in [(0, "zero\n"), (1, "one\n"), (2, "two\n")] {
            let seg = segment::list(d).unwrap().remove(h);
            let mut text = String::new();
            seg.open().unwrap().read_to_string(&mut text).unwrap();
            assert_eq!(text, want);
        }
    }

    #[test]
    fn the_thread_compresses_what_it_is_sent_and_stops_when_the_sender_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (tx, handle) = Archiver::new(d, Retention::default()).spawn().unwrap();
        for h in 0..3 {
            let p = d.join(file_name(stamp(h), false));
            std::fs::write(&p, format!("line {h}\n")).unwrap();
            tx.send(p).unwrap();
        }
        drop(tx);
        handle.join().unwrap();
        assert_eq!(
            names(d),
            (0..3)
                .map(|h| file_name(stamp(h), true))
                .collect::<Vec<_>>()
        );
    }
}
