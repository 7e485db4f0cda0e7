//! Feeds arbitrary bytes, in arbitrary chunks, to a server session: it must never panic, must
//! answer only well-formed replies, and must never hand over a message from an unauthorised
//! client for a domain it does not accept mail for. STARTTLS and AUTH are offered; the
//! "handshake" always succeeds and credentials are accepted only when the split byte says so.
#![no_main]

use std::sync::Arc;

use keel_smtp::{AuthOutcome, Next, Peer, ServerConfig, Session};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, input)) = data.split_first() else {
        return;
    };
    let mut cfg = ServerConfig::new("fuzz.test");
    cfg.max_message_size = 4096;
    cfg.local_domains = vec!["local.test".into()];
    cfg.starttls = true;
    cfg.auth = true;
    cfg.auth_plaintext_loopback = split & 4 == 4;
    let peer = Peer {
        ip: if split & 8 == 8 {
            "127.0.0.1"
        } else {
            "192.0.2.1"
        }
        .parse()
        .unwrap(),
        relay_allowed: split & 1 == 1,
    };
    let mut s = Session::new(Arc::new(cfg), peer);
    let chunk = (split as usize % 64) + 1;
    for piece in input.chunks(chunk) {
        let mut step = s.receive(piece);
        loop {
            for line in step.output.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                assert!(line.len() >= 3 && line[..3].iter().all(u8::is_ascii_digit));
            }
            match step.next {
                Next::Read => break,
                Next::Close => return,
                Next::StartTls => {
                    s.tls_started();
                    break;
                }
                Next::Authenticate(_) => {
                    step = s.auth_result(if split & 2 == 2 {
                        AuthOutcome::Accepted { tenant: None }
                    } else {
                        AuthOutcome::Rejected
                    });
                }
                Next::Store(tx) => {
                    if !peer.relay_allowed && tx.authenticated.is_none() {
                        for r in &tx.rcpts {
                            assert_eq!(r.domain_name(), Some("local.test"));
                            assert!(!r.has_routing_chars());
                        }
                    }
                    step = s.stored(Ok("Q".into()));
                }
            }
        }
    }
});
