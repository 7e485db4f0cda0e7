//! Recovery from torn writes, corruption and odd files.

use std::fs::OpenOptions;
use std::path::PathBuf;

use super::*;
use crate::SpoolError;
use crate::format::{self, SEGMENT_HEADER_LEN};

fn truncate(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(len))
        .expect("truncate");
}

#[test]
fn torn_tail_at_every_offset_of_the_last_record() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pristine = tmp.path().join("pristine");
    let (spool, _) = open(&pristine, SpoolOptions::default());
    spool
        .append_blocking(1, envelope(1, 0), body(1, 300))
        .expect("append");
    spool
        .append_blocking(2, envelope(2, 0), body(2, 300))
        .expect("append");
    spool.update(1, envelope(1, 1));
    spool.flush().expect("flush");
    let segment = last_segment(&pristine);
    let before = file_len(&segment);
    spool
        .append_blocking(3, envelope(3, 0), body(3, 40))
        .expect("append");
    spool.close().expect("close");
    let after = file_len(&segment);
    let record = format::message_record_size(envelope(3, 0).len(), 40).expect("fits") as u64;
    assert_eq!(after - before, record, "the last record is message 3's");

    for cut in before..after {
        let dir = tmp.path().join(format!("cut-{cut}"));
        fs::create_dir(&dir).expect("mkdir");
        copy_dir(&pristine, &dir);
        truncate(&dir.join(segment.file_name().expect("name")), cut);

        let (spool, recovered) = open(&dir, SpoolOptions::default());
        assert_eq!(ids(&recovered), vec![1, 2], "cut at {cut}");
        assert_eq!(recovered[0].envelope, envelope(1, 1));
        assert_eq!(spool.read_body(2).expect("read"), body(2, 300));
        assert_eq!(spool.stats().torn_bytes_truncated, cut - before);
        assert_eq!(spool.stats().corrupt_segments, 0);
        spool
            .append_blocking(4, envelope(4, 0), body(4, 10))
            .expect("append after recovery");
        spool.close().expect("close");

        let (spool, recovered) = open(&dir, SpoolOptions::default());
        assert_eq!(ids(&recovered), vec![1, 2, 4], "cut at {cut}, second open");
        assert_eq!(
            spool.stats().torn_bytes_truncated,
            0,
            "truncation was durable"
        );
        spool.close().expect("close");
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}

#[test]
fn bad_checksum_on_the_last_record_is_a_torn_write() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (spool, _) = open(tmp.path(), SpoolOptions::default());
    spool
        .append_blocking(1, envelope(1, 0), body(1, 100))
        .expect("append");
    spool
        .append_blocking(2, envelope(2, 0), body(2, 100))
        .expect("append");
    spool.close().expect("close");

    let segment = last_segment(tmp.path());
    let mut data = fs::read(&segment).expect("read");
    let at = find(&data, &body(2, 100)).expect("body of 2 on disk") + 50;
    data[at] ^= 0x40;
    fs::write(&segment, &data).expect("write");

    let (spool, recovered) = open(tmp.path(), SpoolOptions::default());
    assert_eq!(ids(&recovered), vec![1]);
    assert!(spool.stats().torn_bytes_truncated > 100);
    assert_eq!(spool.stats().corrupt_segments, 0);
}

/// Three messages in segment 1, one in segment 2; returns segment 1's path.
fn two_segments(dir: &Path) -> PathBuf {
    let (spool, _) = open(dir, SpoolOptions::default());
    for id in 1..=3 {
        spool
            .append_blocking(id, envelope(id, 0), body(id, 100))
            .expect("append");
    }
    spool.close().expect("close");
    let first = last_segment(dir);
    let (spool, _) = open(dir, SpoolOptions::default());
    spool
        .append_blocking(4, envelope(4, 0), body(4, 100))
        .expect("append");
    spool.close().expect("close");
    assert_ne!(last_segment(dir), first);
    first
}

/// Offset of message `id`'s record in `data` (its frame starts 29 bytes before the envelope).
fn record_offset(data: &[u8], id: MessageId) -> usize {
    find(data, &envelope(id, 0)).expect("envelope on disk") - 29
}

#[test]
fn a_damaged_record_inside_an_older_segment_costs_only_that_record() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let first = two_segments(tmp.path());
    let mut data = fs::read(&first).expect("read");
    let at = find(&data, &body(2, 100)).expect("body of 2 on disk") + 10;
    data[at] ^= 0x01;
    fs::write(&first, &data).expect("write");

    let (spool, recovered) = open(tmp.path(), SpoolOptions::default());
    assert_eq!(ids(&recovered), vec![1, 3, 4]);
    assert_eq!(spool.stats().corrupt_segments, 1);
    assert_eq!(spool.stats().torn_bytes_truncated, 0);
    assert_eq!(spool.read_body(3).expect("read"), body(3, 100));
    spool
        .append_blocking(5, envelope(5, 0), body(5, 10))
        .expect("append");
    spool.close().expect("close");
    let (_spool, recovered) = open(tmp.path(), SpoolOptions::default());
    assert_eq!(ids(&recovered), vec![1, 3, 4, 5]);
}

#[test]
fn broken_framing_inside_an_older_segment_skips_the_rest_of_it_only() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let first = two_segments(tmp.path());
    let mut data = fs::read(&first).expect("read");
    // Message 2's length field now points past the end of the file.
    let at = record_offset(&data, 2);
    data[at + 3] = 0x10;
    fs::write(&first, &data).expect("write");

    let (spool, recovered) = open(tmp.path(), SpoolOptions::default());
    // 3 followed 2 in the damaged segment: it goes with it (documented behaviour).
    assert_eq!(ids(&recovered), vec![1, 4]);
    assert_eq!(spool.stats().corrupt_segments, 1);
    assert_eq!(spool.stats().torn_bytes_truncated, 0);
    assert_eq!(spool.read_body(1).expect("read"), body(1, 100));
    spool
        .append_blocking(5, envelope(5, 0), body(5, 10))
        .expect("append");
    spool.close().expect("close");
    let (_spool, recovered) = open(tmp.path(), SpoolOptions::default());
    assert_eq!(ids(&recovered), vec![1, 4, 5]);
}

#[test]
fn a_damaged_record_inside_the_last_segment_is_not_a_torn_tail() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (spool, _) = open(tmp.path(), SpoolOptions::default());
    for id in 1..=3 {
        spool
            .append_blocking(id, envelope(id, 0), body(id, 100))
            .expect("append");
    }
    spool.close().expect("close");
    let segment = last_segment(tmp.path());
    let mut data = fs::read(&segment).expect("read");
    let at = find(&data, &body(2, 100)).expect("body of 2 on disk");
    data[at] ^= 0x01;
    fs::write(&segment, &data).expect("write");

    let (_spool, recovered) = open(tmp.path(), SpoolOptions::default());
    // Acknowledged message 3 is not truncated away with the damaged record before it.
    assert_eq!(ids(&recovered), vec![1, 3]);
    assert_eq!(file_len(&segment), data.len() as u64);
}

#[test]
fn read_body_detects_corruption_on_disk() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (spool, _) = open(tmp.path(), SpoolOptions::default());
    spool
        .append_blocking(1, envelope(1, 0), body(1, 100))
        .expect("append");
    let segment = last_segment(tmp.path());
    let mut data = fs::read(&segment).expect("read");
    let at = find(&data, &body(1, 100)).expect("body on disk");
    data[at] ^= 0x80;
    fs::write(&segment, &data).expect("write");

    match spool.read_body(1) {
        Err(SpoolError::Corrupt {
            segment: path,
            offset,
            ..
        }) => {
            assert_eq!(path, segment);
            assert_eq!(offset, SEGMENT_HEADER_LEN);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn unfinished_segment_creation_is_cleaned_up() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (spool, _) = open(tmp.path(), SpoolOptions::default());
    spool
        .append_blocking(1, envelope(1, 0), body(1, 10))
        .expect("append");
    spool.close().expect("close");

    // A crash while creating the next segment: empty, or part of the header.
    let empty = tmp.path().join(format::segment_file_name(1000));
    let partial = tmp.path().join(format::segment_file_name(1001));
    fs::write(&empty, b"").expect("write");
    fs::write(&partial, &format::SEGMENT_HEADER[..3]).expect("write");

    let (spool, recovered) = open(tmp.path(), SpoolOptions::default());
    assert_eq!(ids(&recovered), vec![1]);
    assert!(!empty.exists() && !partial.exists());
    // Numbering continues after the highest file seen.
    assert_eq!(
        last_segment(tmp.path()),
        tmp.path().join(format::segment_file_name(1002))
    );
    spool
        .append_blocking(2, envelope(2, 0), body(2, 10))
        .expect("append");
}

#[test]
fn unknown_format_version_refuses_to_start() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (spool, _) = open(tmp.path(), SpoolOptions::default());
    spool
        .append_blocking(1, envelope(1, 0), body(1, 10))
        .expect("append");
    spool.close().expect("close");
    let future = tmp.path().join(format::segment_file_name(1));
    let mut data = fs::read(&future).expect("read");
    data[7] = b'9';
    fs::write(&future, &data).expect("write");

    match Spool::open(tmp.path(), SpoolOptions::default()) {
        Err(err @ SpoolError::Corrupt { .. }) => {
            let text = err.to_string();
            assert!(text.contains("version"), "{text}");
            assert!(text.contains("segment-00000000000000000001.log"), "{text}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // Refusing did not touch the file.
    assert_eq!(fs::read(&future).expect("read"), data);
}

#[test]
fn foreign_file_with_a_segment_name_refuses_to_start() {
    let tmp = tempfile::tempdir().expect("tempdir");
    fs::write(
        tmp.path().join(format::segment_file_name(1)),
        b"this is not a spool segment",
    )
    .expect("write");
    assert!(matches!(
        Spool::open(tmp.path(), SpoolOptions::default()),
        Err(SpoolError::Corrupt { offset: 0, .. })
    ));
}

#[test]
fn reopening_without_traffic_does_not_accumulate_segments() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (spool, _) = open(tmp.path(), SpoolOptions::default());
    spool
        .append_blocking(1, envelope(1, 0), body(1, 10))
        .expect("append");
    spool.remove(1);
    spool
        .append_blocking(2, envelope(2, 0), body(2, 10))
        .expect("append");
    spool.close().expect("close");
    for _ in 0..5 {
        let (spool, recovered) = open(tmp.path(), SpoolOptions::default());
        assert_eq!(ids(&recovered), vec![2]);
        spool.flush().expect("flush");
        spool.close().expect("close");
    }
    // The segment holding message 2, plus the current (empty) active one.
    assert!(
        segment_files(tmp.path()).len() <= 2,
        "{:?}",
        segment_files(tmp.path())
    );
}
