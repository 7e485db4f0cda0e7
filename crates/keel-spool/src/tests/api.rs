//! Round trips through the public API, locking and closing.

use super::*;
use crate::SpoolError;

#[test]
fn append_read_update_remove_and_reopen() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("spool");

    let (spool, recovered) = open(&dir, SpoolOptions::default());
    assert!(recovered.is_empty());
    for id in 1..=3 {
        spool
            .append_blocking(id, envelope(id, 0), body(id, 1000 * id as usize))
            .expect("append");
    }
    assert_eq!(spool.read_body(2).expect("read"), body(2, 2000));
    spool.update(2, envelope(2, 1));
    spool.update(2, envelope(2, 2));
    spool.remove(3);
    assert!(matches!(spool.read_body(3), Err(SpoolError::NotFound)));
    assert!(matches!(spool.read_body(99), Err(SpoolError::NotFound)));
    spool.update(99, b"ignored".to_vec());
    spool.remove(99);

    let stats = spool.stats();
    assert_eq!(stats.live_messages, 2);
    assert!(stats.live_bytes > 3000 && stats.live_bytes <= stats.disk_bytes);
    spool.close().expect("close");

    let (spool, recovered) = open(&dir, SpoolOptions::default());
    assert_eq!(
        recovered,
        vec![
            RecoveredMessage {
                id: 1,
                envelope: envelope(1, 0),
                body_len: 1000,
            },
            RecoveredMessage {
                id: 2,
                envelope: envelope(2, 2),
                body_len: 2000,
            },
        ]
    );
    assert_eq!(spool.read_body(1).expect("read"), body(1, 1000));
    assert_eq!(spool.read_body(2).expect("read"), body(2, 2000));
    assert!(matches!(spool.read_body(3), Err(SpoolError::NotFound)));
    spool.close().expect("close");
}

#[test]
fn empty_envelope_and_body() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (spool, _) = open(tmp.path(), SpoolOptions::default());
    spool
        .append_blocking(1, Vec::new(), Vec::new())
        .expect("append");
    assert_eq!(spool.read_body(1).expect("read"), Vec::<u8>::new());
    spool.close().expect("close");
    let (_spool, recovered) = open(tmp.path(), SpoolOptions::default());
    assert_eq!(
        recovered,
        vec![RecoveredMessage {
            id: 1,
            envelope: Vec::new(),
            body_len: 0
        }]
    );
}

#[test]
fn appending_a_live_id_replaces_the_message() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (spool, _) = open(tmp.path(), SpoolOptions::default());
    spool
        .append_blocking(1, envelope(1, 0), body(1, 10))
        .expect("append");
    spool
        .append_blocking(1, envelope(1, 1), body(7, 20))
        .expect("append");
    assert_eq!(spool.read_body(1).expect("read"), body(7, 20));
    assert_eq!(spool.stats().live_messages, 1);
    spool.close().expect("close");
    let (_spool, recovered) = open(tmp.path(), SpoolOptions::default());
    assert_eq!(recovered.len(), 1);
    assert_eq!(recovered[0].envelope, envelope(1, 1));
    assert_eq!(recovered[0].body_len, 20);
}

#[test]
fn removed_then_reappended_id_is_live() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (spool, _) = open(tmp.path(), SpoolOptions::default());
    spool
        .append_blocking(1, envelope(1, 0), body(1, 10))
        .expect("append");
    spool.remove(1);
    spool
        .append_blocking(1, envelope(1, 1), body(1, 30))
        .expect("append");
    spool.close().expect("close");
    let (_spool, recovered) = open(tmp.path(), SpoolOptions::default());
    assert_eq!(ids(&recovered), vec![1]);
    assert_eq!(recovered[0].body_len, 30);
}

#[test]
fn recovered_messages_are_sorted_by_id() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (spool, _) = open(tmp.path(), SpoolOptions::default());
    for id in [5, 3, 9, 1, 7] {
        spool
            .append_blocking(id, envelope(id, 0), body(id, 5))
            .expect("append");
    }
    spool.close().expect("close");
    let (_spool, recovered) = open(tmp.path(), SpoolOptions::default());
    assert_eq!(ids(&recovered), vec![1, 3, 5, 7, 9]);
}

#[test]
fn second_open_of_the_same_dir_is_locked() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (spool, _) = open(tmp.path(), SpoolOptions::default());

    match Spool::open(tmp.path(), SpoolOptions::default()) {
        Err(err @ SpoolError::Locked { .. }) => {
            let SpoolError::Locked { dir } = &err else {
                unreachable!()
            };
            assert_eq!(dir, tmp.path());
            assert!(err.to_string().contains(&tmp.path().display().to_string()));
        }
        Err(other) => panic!("expected Locked, got {other}"),
        Ok(_) => panic!("a second open of a locked spool succeeded"),
    }

    spool.close().expect("close");
    let (again, _) = open(tmp.path(), SpoolOptions::default());
    drop(again);
    // Dropping the last handle releases the lock too.
    let _third = open(tmp.path(), SpoolOptions::default());
}

#[test]
fn close_is_idempotent_and_later_calls_fail() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (spool, _) = open(tmp.path(), SpoolOptions::default());
    spool
        .append_blocking(1, envelope(1, 0), body(1, 10))
        .expect("append");
    let clone = spool.clone();
    spool.close().expect("close");
    clone.close().expect("second close");

    assert!(matches!(
        clone.append_blocking(2, Vec::new(), Vec::new()),
        Err(SpoolError::Closed)
    ));
    assert!(matches!(clone.read_body(1), Err(SpoolError::Closed)));
    assert!(matches!(clone.flush(), Err(SpoolError::Closed)));
    clone.update(1, b"ignored".to_vec());
    clone.remove(1);
    assert_eq!(clone.stats().live_messages, 1);

    let (_spool, recovered) = open(tmp.path(), SpoolOptions::default());
    assert_eq!(recovered[0].envelope, envelope(1, 0));
}

#[test]
fn dropping_the_last_handle_flushes_updates_and_removes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (spool, _) = open(tmp.path(), SpoolOptions::default());
    spool
        .append_blocking(1, envelope(1, 0), body(1, 10))
        .expect("append");
    spool
        .append_blocking(2, envelope(2, 0), body(2, 10))
        .expect("append");
    spool.update(1, envelope(1, 5));
    spool.remove(2);
    drop(spool);
    let (_spool, recovered) = open(tmp.path(), SpoolOptions::default());
    assert_eq!(
        recovered,
        vec![RecoveredMessage {
            id: 1,
            envelope: envelope(1, 5),
            body_len: 10
        }]
    );
}

#[test]
fn flush_makes_updates_durable_and_counts_a_sync() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (spool, _) = open(tmp.path(), SpoolOptions::default());
    spool
        .append_blocking(1, envelope(1, 0), body(1, 10))
        .expect("append");
    let syncs = spool.stats().syncs;
    spool.update(1, envelope(1, 1));
    spool.flush().expect("flush");
    assert_eq!(spool.stats().syncs, syncs + 1);
    // Nothing pending: no sync.
    spool.flush().expect("flush");
    assert_eq!(spool.stats().syncs, syncs + 1);
}

#[test]
fn idle_updates_are_synced_by_the_writer_within_the_interval() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (spool, _) = open(tmp.path(), SpoolOptions::default());
    spool
        .append_blocking(1, envelope(1, 0), body(1, 10))
        .expect("append");
    let syncs = spool.stats().syncs;
    spool.update(1, envelope(1, 1));
    let deadline = std::time::Instant::now() + crate::SYNC_INTERVAL * 3;
    while spool.stats().syncs == syncs {
        assert!(
            std::time::Instant::now() < deadline,
            "unsynced update never synced"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn creates_nested_directory_and_ignores_foreign_files() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("a/b/spool");
    let (spool, _) = open(&dir, SpoolOptions::default());
    spool
        .append_blocking(1, envelope(1, 0), body(1, 10))
        .expect("append");
    spool.close().expect("close");
    fs::write(dir.join("README"), b"operator notes").expect("write");
    fs::write(dir.join("segment-1.log"), b"not ours").expect("write");
    let (_spool, recovered) = open(&dir, SpoolOptions::default());
    assert_eq!(ids(&recovered), vec![1]);
    assert!(dir.join("README").exists());
}

#[tokio::test]
async fn async_append_and_blocking_read() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (spool, _) = open(tmp.path(), SpoolOptions::default());
    spool
        .append(1, envelope(1, 0), body(1, 4096))
        .await
        .expect("append");
    assert_eq!(spool.read_body(1).expect("read"), body(1, 4096));
}

#[test]
fn spool_is_send_sync_and_clone() {
    fn assert_traits<T: Send + Sync + Clone + 'static>() {}
    assert_traits::<Spool>();
    fn assert_send<T: Send>(_: &T) {}
    let tmp = tempfile::tempdir().expect("tempdir");
    let (spool, _) = open(tmp.path(), SpoolOptions::default());
    assert_send(&spool.append(1, Vec::new(), Vec::new()));
}
