//! Model-based test: random operation sequences, with restarts and torn tails, checked against
//! a `HashMap` of what must be in the spool.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::sync::atomic::Ordering;

use proptest::prelude::*;
use proptest::sample::Index;

use super::*;
use crate::format;

#[derive(Debug, Clone)]
enum Op {
    Append {
        key: u8,
        env: u8,
        body_len: usize,
    },
    Update {
        key: u8,
        env: u8,
    },
    Remove {
        key: u8,
    },
    Read {
        key: u8,
    },
    Flush,
    /// `close`, then open again.
    Reopen,
    /// Drop every handle without `close`, then open again.
    DropReopen,
    /// `close`, then leave a torn (partial or checksum-failing) record of an append that was
    /// never acknowledged at the end of the last segment, as a crash mid-write would; then open.
    TornReopen {
        cut: Index,
        corrupt: bool,
    },
    /// The next write fails half-way (ENOSPC).
    FailWrite,
    /// The next sync fails (EIO), and with `truncate` so does cutting the batch off.
    FailSync {
        truncate: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0..12u8;
    prop_oneof![
        6 => (key.clone(), any::<u8>(), 0..1500usize)
            .prop_map(|(key, env, body_len)| Op::Append { key, env, body_len }),
        3 => (key.clone(), any::<u8>()).prop_map(|(key, env)| Op::Update { key, env }),
        4 => key.clone().prop_map(|key| Op::Remove { key }),
        2 => key.prop_map(|key| Op::Read { key }),
        1 => Just(Op::Flush),
        1 => Just(Op::Reopen),
        1 => Just(Op::DropReopen),
        1 => (any::<Index>(), any::<bool>())
            .prop_map(|(cut, corrupt)| Op::TornReopen { cut, corrupt }),
        1 => Just(Op::FailWrite),
        1 => any::<bool>().prop_map(|truncate| Op::FailSync { truncate }),
    ]
}

fn id_of(key: u8) -> MessageId {
    (0x0190_0000_0000_7000_8000_0000_0000_0000 as MessageId) | key as MessageId
}

fn envelope_of(env: u8) -> Vec<u8> {
    vec![env; env as usize % 40]
}

/// What must be in the spool: id → (envelope, body).
type Model = HashMap<MessageId, (Vec<u8>, Vec<u8>)>;

fn options() -> SpoolOptions {
    // Tiny segments: a few appends fill one, so rotation, deletion and compaction all happen.
    SpoolOptions {
        segment_size: 4 << 10,
        max_batch_bytes: 4 << 10,
    }
}

fn check_recovered(spool: &Spool, recovered: &[RecoveredMessage], model: &Model) {
    let mut expected: Vec<RecoveredMessage> = model
        .iter()
        .map(|(&id, (envelope, body))| RecoveredMessage {
            id,
            envelope: envelope.clone(),
            body_len: body.len() as u64,
        })
        .collect();
    expected.sort_by_key(|m| m.id);
    assert_eq!(recovered, expected.as_slice());
    for (&id, (_, body)) in model {
        assert_eq!(&spool.read_body(id).expect("read recovered body"), body);
    }
}

/// Appends a torn record to the end of the last segment. Returns how many bytes it added.
fn tear_tail(dir: &Path, cut: Index, corrupt: bool) -> u64 {
    let never_acked = u128::MAX;
    let mut record = format::encode_message(never_acked, b"torn", &body(7, 200)).expect("fits");
    if corrupt {
        let at = record.len() - 100;
        record[at] ^= 0x10;
    } else {
        record.truncate(cut.index(record.len()));
    }
    let mut file = OpenOptions::new()
        .append(true)
        .open(last_segment(dir))
        .expect("open last segment");
    file.write_all(&record).expect("write torn tail");
    record.len() as u64
}

fn clear_faults(spool: &Spool) {
    let faults = &spool.inner.shared.faults;
    for counter in [&faults.write, &faults.sync, &faults.truncate] {
        counter.store(0, Ordering::SeqCst);
    }
}

fn run(ops: Vec<Op>) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (mut spool, recovered) = open(dir, options());
    assert!(recovered.is_empty());
    let mut model = Model::new();
    let mut appends = 0u128;
    let mut faults_injected = false;

    for op in ops {
        match op {
            Op::Append { key, env, body_len } => {
                appends += 1;
                let (id, envelope, body) = (id_of(key), envelope_of(env), body(appends, body_len));
                match spool.append_blocking(id, envelope.clone(), body.clone()) {
                    Ok(()) => {
                        model.insert(id, (envelope, body));
                    }
                    // Only injected faults make appends fail; the message must not be stored.
                    Err(err) => assert!(faults_injected, "append failed: {err}"),
                }
            }
            Op::Update { key, env } => {
                let id = id_of(key);
                spool.update(id, envelope_of(env));
                if let Some((envelope, _)) = model.get_mut(&id) {
                    *envelope = envelope_of(env);
                }
            }
            Op::Remove { key } => {
                spool.remove(id_of(key));
                model.remove(&id_of(key));
            }
            Op::Read { key } => match model.get(&id_of(key)) {
                Some((_, body)) => assert_eq!(&spool.read_body(id_of(key)).expect("read"), body),
                None => assert!(matches!(
                    spool.read_body(id_of(key)),
                    Err(crate::SpoolError::NotFound)
                )),
            },
            Op::Flush => {
                if let Err(err) = spool.flush() {
                    assert!(faults_injected, "flush failed: {err}");
                }
            }
            Op::FailWrite => {
                faults_injected = true;
                spool.inner.shared.faults.write.store(1, Ordering::SeqCst);
            }
            Op::FailSync { truncate } => {
                faults_injected = true;
                spool.inner.shared.faults.sync.store(1, Ordering::SeqCst);
                spool
                    .inner
                    .shared
                    .faults
                    .truncate
                    .store(truncate.into(), Ordering::SeqCst);
            }
            Op::Reopen | Op::DropReopen | Op::TornReopen { .. } => {
                // The disk is healthy again: whatever was carried gets written now.
                clear_faults(&spool);
                if matches!(op, Op::DropReopen) {
                    drop(spool);
                } else {
                    spool.close().expect("close");
                }
                let torn = match op {
                    Op::TornReopen { cut, corrupt } => tear_tail(dir, cut, corrupt),
                    _ => 0,
                };
                let (reopened, recovered) = open(dir, options());
                assert_eq!(reopened.stats().torn_bytes_truncated, torn);
                // A half-written batch that could not be cut off is garbage inside a sealed
                // segment: recovery rightly reports it.
                if !faults_injected {
                    assert_eq!(reopened.stats().corrupt_segments, 0);
                }
                check_recovered(&reopened, &recovered, &model);
                spool = reopened;
            }
        }
        assert_eq!(spool.stats().live_messages, model.len() as u64);
    }

    // Whatever the sequence, a final restart gives back exactly the model.
    clear_faults(&spool);
    spool.close().expect("close");
    let (spool, recovered) = open(dir, options());
    check_recovered(&spool, &recovered, &model);
    // And disk use stayed proportionate (a handful of tiny segments at most).
    let stats = spool.stats();
    assert!(
        stats.disk_bytes <= 2 * stats.live_bytes + 4 * options().segment_size + (4 << 10),
        "{stats:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn spool_matches_model(ops in prop::collection::vec(op(), 1..80)) {
        run(ops);
    }
}
