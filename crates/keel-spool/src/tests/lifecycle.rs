//! Segment rotation, deletion and compaction under churn.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::*;
use crate::SpoolStats;

const KIB: u64 = 1 << 10;

/// Appends messages `from..to` (1 KiB bodies), removing message `id - window` after appending
/// `id`, so that only the newest `window` churn messages stay live across calls.
/// Returns the largest disk use and segment count seen.
fn churn(spool: &Spool, from: MessageId, to: MessageId, window: MessageId) -> (u64, u64) {
    let (mut max_disk, mut max_segments) = (0, 0);
    for id in from..to {
        spool
            .append_blocking(id, envelope(id, 0), body(id, 1024))
            .expect("append");
        if let Some(old) = id.checked_sub(window) {
            spool.remove(old);
        }
        let SpoolStats {
            disk_bytes,
            segments,
            ..
        } = spool.stats();
        max_disk = max_disk.max(disk_bytes);
        max_segments = max_segments.max(segments);
    }
    (max_disk, max_segments)
}

#[test]
fn disk_stays_bounded_under_append_remove_churn() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (spool, _) = open(tmp.path(), small_segments());

    // About 30 segments' worth of traffic.
    let (max_disk, max_segments) = churn(&spool, 0, 1800, 8);
    let stats = spool.stats();
    assert!(stats.deleted_segments >= 20, "{stats:?}");
    assert!(max_segments <= 4, "max segments {max_segments}");
    assert!(max_disk <= 4 * 64 * KIB + 8 * KIB, "max disk {max_disk}");
    assert_eq!(stats.live_messages, 8);
    spool.close().expect("close");
    assert!(segment_files(tmp.path()).len() <= 4);

    let (spool, recovered) = open(tmp.path(), small_segments());
    assert_eq!(ids(&recovered), (1792..1800).collect::<Vec<_>>());
    for id in 1792..1800 {
        assert_eq!(spool.read_body(id).expect("read"), body(id, 1024));
    }
}

#[test]
fn compaction_moves_a_long_lived_message_forward() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (spool, _) = open(tmp.path(), small_segments());
    let long_lived: MessageId = u128::MAX - 1;
    spool
        .append_blocking(long_lived, envelope(long_lived, 0), body(long_lived, 2000))
        .expect("append");
    spool.update(long_lived, envelope(long_lived, 1));

    let (_, max_segments_1) = churn(&spool, 0, 500, 4);
    spool.update(long_lived, envelope(long_lived, 2));
    let (_, max_segments_2) = churn(&spool, 500, 1000, 4);

    let stats = spool.stats();
    assert!(stats.relocated_messages >= 2, "{stats:?}");
    // Without compaction the first segment would pin ~16 segments.
    assert!(max_segments_1.max(max_segments_2) <= 5, "{stats:?}");
    assert!(
        !segment_files(tmp.path())
            .iter()
            .any(|p| p.ends_with(crate::format::segment_file_name(1))),
        "the first segment was compacted away"
    );
    assert_eq!(
        spool.read_body(long_lived).expect("read"),
        body(long_lived, 2000)
    );
    spool.update(long_lived, envelope(long_lived, 3));
    spool.close().expect("close");

    let (spool, recovered) = open(tmp.path(), small_segments());
    let found = recovered
        .iter()
        .find(|m| m.id == long_lived)
        .expect("long-lived message survives");
    assert_eq!(found.envelope, envelope(long_lived, 3));
    assert_eq!(found.body_len, 2000);
    assert_eq!(
        spool.read_body(long_lived).expect("read"),
        body(long_lived, 2000)
    );
    assert_eq!(recovered.len(), 5);
}

#[test]
fn removed_message_never_comes_back_after_compaction_and_deletion() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let victim: MessageId = 1 << 100;
    let keeper: MessageId = (1 << 100) + 1;
    let (mut spool, _) = open(tmp.path(), small_segments());
    spool
        .append_blocking(victim, envelope(victim, 0), body(victim, 500))
        .expect("append");
    spool
        .append_blocking(keeper, envelope(keeper, 0), body(keeper, 500))
        .expect("append");
    spool.remove(victim);

    let mut next = 0;
    for round in 0..4 {
        churn(&spool, next, next + 150, 4);
        next += 150;
        // Alternate a clean close with dropping the handle.
        if round % 2 == 0 {
            spool.close().expect("close");
        } else {
            drop(spool);
        }
        let (reopened, recovered) = open(tmp.path(), small_segments());
        assert!(
            !ids(&recovered).contains(&victim),
            "removed message came back"
        );
        assert!(ids(&recovered).contains(&keeper));
        assert_eq!(recovered.len(), 5, "keeper + churn window");
        spool = reopened;
    }
    // The first segment (victim's and keeper's) is gone: keeper was relocated.
    assert!(
        !tmp.path()
            .join(crate::format::segment_file_name(1))
            .exists()
    );
    assert_eq!(spool.read_body(keeper).expect("read"), body(keeper, 500));
}

#[test]
fn remove_records_outlive_the_messages_they_cancel() {
    // The first segment is pinned by a big live message (too live to be worth compacting);
    // the segment holding the victim's Remove becomes dead first. Deleting it out of order
    // would resurrect the victim.
    let tmp = tempfile::tempdir().expect("tempdir");
    let victim: MessageId = 1 << 100;
    let pinner: MessageId = (1 << 100) + 1;
    let (spool, _) = open(tmp.path(), small_segments());
    spool
        .append_blocking(victim, envelope(victim, 0), body(victim, 500))
        .expect("append");
    spool
        .append_blocking(pinner, envelope(pinner, 0), body(pinner, 64 * 1024))
        .expect("append");
    spool.flush().expect("flush");
    assert_eq!(spool.stats().segments, 2, "segment 1 is full and sealed");
    spool.remove(victim);
    churn(&spool, 0, 100, 4);
    let stats = spool.stats();
    assert_eq!(stats.relocated_messages, 0, "{stats:?}");
    assert!(
        tmp.path()
            .join(crate::format::segment_file_name(2))
            .exists()
    );
    spool.close().expect("close");

    let (spool, recovered) = open(tmp.path(), small_segments());
    assert!(
        !ids(&recovered).contains(&victim),
        "removed message came back"
    );
    assert!(ids(&recovered).contains(&pinner));

    // Once dead segments make up most of the disk, even a mostly-live oldest segment is
    // compacted, so a big long-lived message cannot pin unbounded disk either.
    let (max_disk, _) = churn(&spool, 100, 600, 4);
    assert!(spool.stats().relocated_messages >= 1);
    assert!(
        max_disk <= 2 * (66 + 4) * KIB + 3 * 64 * KIB,
        "max disk {max_disk}"
    );
    assert!(
        !tmp.path()
            .join(crate::format::segment_file_name(1))
            .exists()
    );
    spool.close().expect("close");
    let (_spool, recovered) = open(tmp.path(), small_segments());
    assert!(
        !ids(&recovered).contains(&victim),
        "removed message came back"
    );
    assert_eq!(recovered.len(), 5);
}

#[test]
fn reads_are_safe_while_compaction_moves_the_message() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (spool, _) = open(tmp.path(), small_segments());
    let long_lived: MessageId = u128::MAX;
    let expected = body(long_lived, 3000);
    spool
        .append_blocking(long_lived, envelope(long_lived, 0), expected.clone())
        .expect("append");

    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let spool = spool.clone();
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                assert_eq!(spool.read_body(long_lived).expect("read"), expected);
                reads += 1;
            }
            reads
        })
    };
    churn(&spool, 0, 700, 4);
    stop.store(true, Ordering::Relaxed);
    let reads = reader.join().expect("reader thread");
    assert!(reads > 0);
    assert!(spool.stats().relocated_messages >= 1);
}
