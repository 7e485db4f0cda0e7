//! Disk failures (injected into the writer): rejected batches, poisoned segments, retries.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::*;
use crate::SpoolError;
use crate::format;

fn inject(counter: &AtomicU64, failures: u64) {
    counter.store(failures, Ordering::SeqCst);
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn failed_write_rejects_the_append_and_the_spool_carries_on() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (spool, _) = open(tmp.path(), SpoolOptions::default());
    let faults = &spool.inner.shared.faults;
    spool
        .append_blocking(1, envelope(1, 0), body(1, 100))
        .expect("append");
    let segments = spool.stats().segments;

    // The disk fills up half-way through the write, three times in a row.
    inject(&faults.write, 3);
    for id in 2..=4 {
        match spool.append_blocking(id, envelope(id, 0), body(id, 100)) {
            Err(err @ SpoolError::Io { .. }) => {
                let SpoolError::Io { op, path, source } = &err else {
                    unreachable!()
                };
                assert_eq!(*op, "write to");
                assert_eq!(*path, last_segment(tmp.path()));
                assert_eq!(source.raw_os_error(), Some(28));
                assert!(err.to_string().contains("could not write to"), "{err}");
            }
            other => panic!("expected an I/O error, got {other:?}"),
        }
        assert!(matches!(spool.read_body(id), Err(SpoolError::NotFound)));
    }
    let stats = spool.stats();
    assert_eq!(stats.failed_batches, 3);
    assert_eq!(stats.live_messages, 1);

    // Space is back.
    spool
        .append_blocking(5, envelope(5, 0), body(5, 100))
        .expect("append");
    assert_eq!(spool.read_body(5).expect("read"), body(5, 100));
    // The half-written records were cut off; the segment is still in use.
    assert_eq!(spool.stats().segments, segments);
    spool.close().expect("close");

    let (spool, recovered) = open(tmp.path(), SpoolOptions::default());
    assert_eq!(ids(&recovered), vec![1, 5]);
    assert_eq!(spool.stats().torn_bytes_truncated, 0);
    assert_eq!(spool.stats().corrupt_segments, 0);
}

#[test]
fn failed_sync_with_failed_truncation_tombstones_the_rejected_append() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (spool, _) = open(tmp.path(), SpoolOptions::default());
    let faults = &spool.inner.shared.faults;
    spool
        .append_blocking(1, envelope(1, 0), body(1, 100))
        .expect("append");
    let poisoned = last_segment(tmp.path());
    let segments = spool.stats().segments;

    inject(&faults.sync, 1);
    inject(&faults.truncate, 1);
    assert!(matches!(
        spool.append_blocking(2, envelope(2, 0), body(2, 100)),
        Err(SpoolError::Io { op: "sync", .. })
    ));
    // The rejected record is complete and valid on disk: only a tombstone keeps it out.
    let data = fs::read(&poisoned).expect("read");
    let record = format::encode_message(2, &envelope(2, 0), &body(2, 100)).expect("fits");
    assert!(find(&data, &record).is_some());

    spool
        .append_blocking(3, envelope(3, 0), body(3, 100))
        .expect("append");
    assert_eq!(
        spool.stats().segments,
        segments + 1,
        "a new segment was started"
    );
    assert_ne!(last_segment(tmp.path()), poisoned);
    let fresh = fs::read(last_segment(tmp.path())).expect("read");
    assert!(find(&fresh, &format::encode_remove(2)).is_some());
    spool.close().expect("close");

    let (spool, recovered) = open(tmp.path(), SpoolOptions::default());
    assert_eq!(ids(&recovered), vec![1, 3]);
    assert_eq!(spool.read_body(1).expect("read"), body(1, 100));
    // Retrying the same id after the failure works and sticks.
    spool
        .append_blocking(2, envelope(2, 1), body(2, 100))
        .expect("append");
    spool.close().expect("close");
    let (_spool, recovered) = open(tmp.path(), SpoolOptions::default());
    assert_eq!(ids(&recovered), vec![1, 2, 3]);
}

#[test]
fn failed_sync_alone_also_moves_to_a_new_segment() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (spool, _) = open(tmp.path(), SpoolOptions::default());
    let faults = &spool.inner.shared.faults;
    spool
        .append_blocking(1, envelope(1, 0), body(1, 100))
        .expect("append");
    let segments = spool.stats().segments;
    inject(&faults.sync, 1);
    assert!(
        spool
            .append_blocking(2, envelope(2, 0), body(2, 100))
            .is_err()
    );
    spool
        .append_blocking(3, envelope(3, 0), body(3, 100))
        .expect("append");
    assert_eq!(spool.stats().segments, segments + 1);
    spool.close().expect("close");
    let (_spool, recovered) = open(tmp.path(), SpoolOptions::default());
    assert_eq!(ids(&recovered), vec![1, 3]);
}

#[test]
fn removes_and_updates_of_a_failed_batch_are_written_later() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (spool, _) = open(tmp.path(), SpoolOptions::default());
    let faults = &spool.inner.shared.faults;
    for id in 1..=3 {
        spool
            .append_blocking(id, envelope(id, 0), body(id, 100))
            .expect("append");
    }
    // Written but not yet synced when the next sync fails: they must be written again.
    spool.remove(1);
    inject(&faults.sync, 1);
    inject(&faults.truncate, 1);
    assert!(
        spool
            .append_blocking(4, envelope(4, 0), body(4, 100))
            .is_err()
    );
    // Fails in its own batch.
    inject(&faults.write, 1);
    spool.update(2, envelope(2, 7));
    wait_for("the failed update batch", || {
        spool.stats().failed_batches == 2
    });
    spool.flush().expect("flush once the disk is back");
    spool.close().expect("close");

    let (_spool, recovered) = open(tmp.path(), SpoolOptions::default());
    assert_eq!(ids(&recovered), vec![2, 3]);
    assert_eq!(recovered[0].envelope, envelope(2, 7));
}

#[test]
fn pending_removes_are_retried_while_idle() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (spool, _) = open(tmp.path(), SpoolOptions::default());
    let faults = &spool.inner.shared.faults;
    spool
        .append_blocking(1, envelope(1, 0), body(1, 100))
        .expect("append");
    inject(&faults.write, 1);
    spool.remove(1);
    wait_for("the failed remove batch", || {
        spool.stats().failed_batches == 1
    });
    let remove = format::encode_remove(1);
    // No more requests: the writer retries on its own.
    wait_for("the retried remove to reach the disk", || {
        let data = fs::read(last_segment(tmp.path())).expect("read");
        find(&data, &remove).is_some()
    });
    wait_for("the retried remove to be synced", || {
        spool.inner.shared.counters.syncs.load(Ordering::Relaxed) >= 3
    });
}

#[test]
fn flush_and_close_report_a_disk_that_stays_broken() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (spool, _) = open(tmp.path(), SpoolOptions::default());
    let faults = &spool.inner.shared.faults;
    spool
        .append_blocking(1, envelope(1, 0), body(1, 100))
        .expect("append");
    inject(&faults.write, 1000);
    spool.remove(1);
    assert!(spool.flush().is_err());
    assert!(spool.close().is_err());
    inject(&faults.write, 0);
    // The remove never made it; the message is still there (a retry, not a loss).
    let (_spool, recovered) = open(tmp.path(), SpoolOptions::default());
    assert_eq!(ids(&recovered), vec![1]);
}

#[test]
fn failed_replacement_of_a_live_message_does_not_take_effect() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (spool, _) = open(tmp.path(), SpoolOptions::default());
    let faults = &spool.inner.shared.faults;
    spool
        .append_blocking(1, envelope(1, 0), body(1, 100))
        .expect("append");
    spool
        .append_blocking(2, envelope(2, 0), body(2, 100))
        .expect("append");
    inject(&faults.sync, 1);
    inject(&faults.truncate, 1);
    // The replacement's record stays on disk, complete, in the poisoned segment.
    assert!(
        spool
            .append_blocking(1, envelope(1, 1), body(9, 50))
            .is_err()
    );
    assert_eq!(spool.read_body(1).expect("read"), body(1, 100));
    spool.close().expect("close");

    let (spool, recovered) = open(tmp.path(), SpoolOptions::default());
    assert_eq!(ids(&recovered), vec![1, 2]);
    assert_eq!(recovered[0].envelope, envelope(1, 0));
    assert_eq!(spool.read_body(1).expect("read"), body(1, 100));
}
