//! The event log writer: the one thread that owns `events.jsonl`.
//!
//! Producers never wait for it: they send over an unbounded channel. The writer takes
//! whatever has queued, writes it through one buffer and flushes when the channel runs dry,
//! so a burst costs one `write` and a reader sees each event within milliseconds.
//!
//! Rotation happens here, between two lines, never inside one: each event is serialised
//! whole into a line buffer before any byte of it is written; before a rotation the buffer
//! is flushed and the file fsynced, then the file is renamed to its segment name and a new
//! live file opened. A line is therefore in exactly one file, complete. The renamed segment
//! is handed to the archiver thread to compress; the writer goes straight back to writing.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;

use super::Event;
use super::archiver::sync_dir;
use super::rotate::Policy;
use super::segment;

const BUFFER: usize = 256 * 1024;
/// After a failed rotation (say, a full disk), how long to keep writing to the current file
/// before trying again, so a persistent error is not retried (and logged) for every event.
const RETRY_ROTATION: Duration = Duration::from_secs(10);

pub struct Writer {
    dir: PathBuf,
    policy: Policy,
    out: BufWriter<File>,
    /// Bytes in the live file, including what is still buffered.
    size: u64,
    /// The rotation period the live file's first line belongs to; `None` while empty.
    period: Option<u64>,
    archive: std_mpsc::Sender<PathBuf>,
    line: Vec<u8>,
    retry_at: Option<Instant>,
    write_failed: bool,
}

impl Writer {
    /// Opens (appending to) the live file in `dir`. A file left by an earlier run keeps its
    /// size, and the period of its last write, so it is rotated on time.
    pub fn open(
        dir: &Path,
        policy: Policy,
        archive: std_mpsc::Sender<PathBuf>,
    ) -> io::Result<Writer> {
        let mut file = open_live(dir)?;
        end_torn_line(dir, &mut file)?;
        let meta = file.metadata()?;
        let period = if meta.len() > 0 {
            meta.modified().ok().and_then(|t| policy.period(t))
        } else {
            None
        };
        Ok(Writer {
            dir: dir.to_path_buf(),
            policy,
            out: BufWriter::with_capacity(BUFFER, file),
            size: meta.len(),
            period,
            archive,
            line: Vec::with_capacity(1024),
            retry_at: None,
            write_failed: false,
        })
    }

    /// Writes everything that arrives on `rx` until every sender is gone, then flushes and
    /// fsyncs. Blocks the calling thread.
    pub fn run(mut self, mut rx: mpsc::UnboundedReceiver<Event>) {
        // A timer to wake up at rotation boundaries while no event arrives; file I/O stays
        // blocking on this thread, which is what it is for.
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        {
            Ok(rt) => Some(rt),
            Err(e) => {
                tracing::error!(error = %e, "event log: no timer; rotating by time only when events arrive");
                None
            }
        };
        self.rotate_if_due(SystemTime::now());
        loop {
            let wait = self
                .period
                .and(self.policy.until_boundary(SystemTime::now()));
            let next = match (&rt, wait) {
                (Some(rt), Some(wait)) => {
                    // The timer must be created inside the runtime, hence the async block.
                    match rt.block_on(async { tokio::time::timeout(wait, rx.recv()).await }) {
                        Ok(next) => next,
                        Err(_elapsed) => {
                            self.rotate_if_due(SystemTime::now());
                            continue;
                        }
                    }
                }
                (Some(rt), None) => rt.block_on(rx.recv()),
                (None, _) => rx.blocking_recv(),
            };
            let Some(event) = next else { break };
            self.rotate_if_due(SystemTime::now());
            self.write(&event);
            while let Ok(event) = rx.try_recv() {
                self.write(&event);
            }
            self.flush();
            self.rotate_if_due(SystemTime::now());
        }
        self.flush();
        if let Err(e) = self.out.get_ref().sync_data() {
            tracing::error!(error = %e, "cannot sync the event log");
        }
    }

    /// Appends one event as one line, rotating first if the file is full.
    pub fn write(&mut self, event: &Event) {
        if self.policy.size.is_some_and(|limit| self.size >= limit) {
            self.rotate_if_due(SystemTime::now());
        }
        self.line.clear();
        if let Err(e) = serde_json::to_writer(&mut self.line, event) {
            tracing::error!(error = %e, id = %event.id, "cannot serialise an event");
            return;
        }
        self.line.push(b'\n');
        match self.out.write_all(&self.line) {
            Ok(()) => {
                self.size += self.line.len() as u64;
                if self.period.is_none() {
                    self.period = self.policy.period(SystemTime::now()).or(Some(0));
                }
            }
            Err(e) => self.write_error(&e),
        }
    }

    /// Pushes buffered lines to the file.
    pub fn flush(&mut self) {
        match self.out.flush() {
            Ok(()) => self.write_failed = false,
            Err(e) => self.write_error(&e),
        }
    }

    fn write_error(&mut self, e: &io::Error) {
        // `BufWriter` keeps what it could not write and tries again with the next flush, so
        // an error here delays lines rather than tearing them. Say so once per outage.
        if !self.write_failed {
            tracing::error!(error = %e, "cannot write the event log");
            self.write_failed = true;
        }
    }

    /// Rotates if the policy says so and no recent attempt failed.
    pub fn rotate_if_due(&mut self, now: SystemTime) {
        if !self.policy.due(self.size, self.period, now) {
            return;
        }
        if self.retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        match self.rotate(now) {
            Ok(()) => self.retry_at = None,
            Err(e) => {
                tracing::error!(error = %e, "cannot rotate the event log; writing on to the current file");
                self.retry_at = Some(Instant::now() + RETRY_ROTATION);
            }
        }
    }

    /// Closes the live file as a segment and starts a new one.
    fn rotate(&mut self, now: SystemTime) -> io::Result<()> {
        self.out.flush()?;
        self.out.get_ref().sync_data()?;
        let live = self.dir.join(segment::LIVE);
        let target = segment::fresh(&self.dir, now);
        let renamed = match std::fs::rename(&live, &target) {
            Ok(()) => true,
            // Someone removed the live file: its lines are gone with it, but new ones can
            // still go to a new file.
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(e),
        };
        let file = match open_live(&self.dir) {
            Ok(f) => f,
            Err(e) => {
                if renamed {
                    let _ = std::fs::rename(&target, &live);
                }
                return Err(e);
            }
        };
        // The old writer's buffer is empty (flushed above); dropping it closes the segment.
        self.out = BufWriter::with_capacity(BUFFER, file);
        self.size = 0;
        self.period = None;
        if let Err(e) = sync_dir(&self.dir) {
            tracing::warn!(error = %e, "cannot sync the event log directory");
        }
        if renamed {
            // The archiver outlives the writer; if it is gone the segment stays plain, which
            // readers handle and the next start compresses.
            let _ = self.archive.send(target);
        }
        Ok(())
    }
}

/// A crash in the middle of a write can leave the live file ending inside a line. Ending that
/// fragment with a newline keeps it from swallowing the first line written now (readers skip
/// the fragment as not JSON; the event in it was never fully written anyway).
fn end_torn_line(dir: &Path, live: &mut File) -> io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let mut reader = File::open(dir.join(segment::LIVE))?;
    if reader.metadata()?.len() == 0 {
        return Ok(());
    }
    reader.seek(SeekFrom::End(-1))?;
    let mut last = [0u8; 1];
    reader.read_exact(&mut last)?;
    if last[0] != b'\n' {
        tracing::warn!("the event log ends in a partial line (a crash mid-write); closing it");
        live.write_all(b"\n")?;
    }
    Ok(())
}

fn open_live(dir: &Path) -> io::Result<File> {
    File::options()
        .create(true)
        .append(true)
        .open(dir.join(segment::LIVE))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::io::BufRead;

    use super::*;
    use crate::events::Kind;

    fn event(i: usize) -> Event {
        Event {
            kind: Kind::Delivery,
            id: format!("{i:016x}"),
            recipient: format!("r{i}@dest.test"),
            ..crate::events::tests::sample()
        }
    }

    /// Every line of every file in `dir` (segments decompressed), by id.
    fn all_lines(dir: &Path) -> HashMap<String, usize> {
        let mut seen = HashMap::new();
        let mut files: Vec<Box<dyn BufRead + Send>> = segment::list(dir)
            .unwrap()
            .iter()
            .map(|s| s.open().unwrap())
            .collect();
        files.push(Box::new(io::BufReader::new(
            File::open(dir.join(segment::LIVE)).unwrap(),
        )));
        for f in files {
            for line in f.lines() {
                let v: serde_json::Value =
                    serde_json::from_str(&line.unwrap()).expect("whole line");
                *seen
                    .entry(v["id"].as_str().unwrap().to_string())
                    .or_default() += 1;
            }
        }
        seen
    }

    #[test]
    fn size_rotation_keeps_every_line_once_and_whole() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (archive, rx_paths) = std_mpsc::channel();
        let policy = Policy {
            size: Some(2000),
            interval: None,
        };
        let (sink, rx) = super::super::EventSink::channel();
        let writer = Writer::open(d, policy, archive).unwrap();
        let t = std::thread::spawn(move || writer.run(rx));
        for i in 0..500 {
            sink.emit(event(i));
        }
        drop(sink);
        t.join().unwrap();
        let rotated: Vec<PathBuf> = rx_paths.try_iter().collect();
        assert!(rotated.len() >= 20, "{} rotations", rotated.len());
        for p in &rotated {
            let len = std::fs::metadata(p).unwrap().len();
            assert!(
                (2000..2400).contains(&len),
                "{} is {len} bytes",
                p.display()
            );
        }
        let seen = all_lines(d);
        assert_eq!(seen.len(), 500);
        assert!(seen.values().all(|&n| n == 1));
    }

    #[test]
    fn a_live_file_from_an_earlier_period_is_rotated_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let live = d.join(segment::LIVE);
        std::fs::write(&live, b"{\"id\":\"old\"}\n").unwrap();
        let yesterday = SystemTime::now() - Duration::from_secs(86_400);
        File::options()
            .write(true)
            .open(&live)
            .unwrap()
            .set_modified(yesterday)
            .unwrap();
        let (archive, rx_paths) = std_mpsc::channel();
        let policy = Policy {
            size: None,
            interval: Some(Duration::from_secs(3600)),
        };
        let (sink, rx) = super::super::EventSink::channel();
        let writer = Writer::open(d, policy, archive).unwrap();
        let t = std::thread::spawn(move || writer.run(rx));
        sink.emit(event(1));
        drop(sink);
        t.join().unwrap();
        let rotated: Vec<PathBuf> = rx_paths.try_iter().collect();
        assert_eq!(rotated.len(), 1);
        assert_eq!(
            std::fs::read_to_string(&rotated[0]).unwrap(),
            "{\"id\":\"old\"}\n"
        );
        let now = std::fs::read_to_string(&live).unwrap();
        assert_eq!(now.lines().count(), 1);
        assert!(now.contains("0000000000000001"));
    }

    #[test]
    fn a_line_torn_by_a_crash_does_not_swallow_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join(segment::LIVE);
        std::fs::write(&live, b"{\"id\":\"whole\"}\n{\"id\":\"to").unwrap();
        let (archive, _paths) = std_mpsc::channel();
        let policy = Policy {
            size: None,
            interval: None,
        };
        let mut w = Writer::open(dir.path(), policy, archive).unwrap();
        w.write(&event(7));
        w.flush();
        let text = std::fs::read_to_string(&live).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[1], "{\"id\":\"to");
        let v: serde_json::Value = serde_json::from_str(lines[2]).unwrap();
        assert_eq!(v["id"], "0000000000000007");
    }

    #[test]
    fn an_empty_file_is_never_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let (archive, rx_paths) = std_mpsc::channel();
        let mut w = Writer::open(
            dir.path(),
            Policy {
                size: Some(1),
                interval: Some(Duration::from_secs(1)),
            },
            archive,
        )
        .unwrap();
        w.rotate_if_due(SystemTime::now() + Duration::from_secs(3600));
        assert_eq!(rx_paths.try_iter().count(), 0);
        w.write(&event(1));
        w.flush();
        w.rotate_if_due(SystemTime::now());
        assert_eq!(rx_paths.try_iter().count(), 1);
    }
}
