//! Table tests of the server session, each re-run with the input split at every byte position
//! and fed one byte at a time: the replies and stored messages must not depend on how the
//! input was chunked by the network.

use std::sync::Arc;

use keel_smtp::{Next, Peer, ServerConfig, Session, Transaction};

fn config() -> Arc<ServerConfig> {
    let mut c = ServerConfig::new("mx.keel.test");
    c.max_message_size = 4000;
    c.max_recipients = 3;
    c.local_domains = vec!["local.test".into()];
    Arc::new(c)
}

struct Outcome {
    output: String,
    stored: Vec<Transaction>,
    closed: bool,
}

/// Feeds `chunks` in order, storing every message successfully as "Q<n>".
fn run_chunks(chunks: &[&[u8]], relay: bool) -> Outcome {
    let peer = Peer {
        ip: "192.0.2.1".parse().unwrap(),
        relay_allowed: relay,
    };
    let mut s = Session::new(config(), peer);
    let mut out = Vec::new();
    let mut stored = Vec::new();
    let mut closed = false;
    for chunk in chunks {
        if closed {
            break;
        }
        let mut step = s.receive(chunk);
        loop {
            out.extend_from_slice(&step.output);
            match step.next {
                Next::Read => break,
                Next::Close => {
                    closed = true;
                    break;
                }
                Next::Store(tx) => {
                    stored.push(tx);
                    step = s.stored(Ok(format!("Q{}", stored.len())));
                }
                Next::StartTls | Next::Authenticate(_) => {
                    unreachable!("TLS and AUTH are not configured in these tests")
                }
            }
        }
    }
    Outcome {
        output: String::from_utf8(out).unwrap(),
        stored,
        closed,
    }
}

/// Runs `input` whole, at every two-way split, and byte by byte; asserts all agree and returns
/// the whole-input outcome.
fn run(input: &[u8], relay: bool) -> Outcome {
    let whole = run_chunks(&[input], relay);
    for i in 1..input.len() {
        let split = run_chunks(&[&input[..i], &input[i..]], relay);
        assert_eq!(split.output, whole.output, "split at {i}");
        assert_eq!(split.stored, whole.stored, "split at {i}");
        assert_eq!(split.closed, whole.closed, "split at {i}");
    }
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    let single = run_chunks(&bytes, relay);
    assert_eq!(single.output, whole.output, "byte by byte");
    assert_eq!(single.stored, whole.stored, "byte by byte");
    whole
}

fn codes(output: &str) -> Vec<String> {
    output
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .filter(|l| l.as_bytes().get(3) == Some(&b' '))
        .map(|l| {
            let mut parts = l.splitn(3, ' ');
            let code = parts.next().unwrap_or("");
            let second = parts.next().unwrap_or("");
            if second.chars().next().is_some_and(|c| c.is_ascii_digit()) && second.contains('.') {
                format!("{code} {second}")
            } else {
                code.to_string()
            }
        })
        .collect()
}

#[test]
fn plain_transaction_with_pipelining() {
    let o = run(
        b"EHLO client.test\r\nMAIL FROM:<a@sender.test>\r\nRCPT TO:<b@dest.test>\r\nDATA\r\n\
          Subject: hi\r\n\r\nbody\r\n..dot\r\n.\r\nQUIT\r\n",
        true,
    );
    assert_eq!(
        codes(&o.output),
        [
            "250",
            "250 2.1.0",
            "250 2.1.5",
            "354",
            "250 2.0.0",
            "221 2.0.0"
        ]
    );
    assert!(o.output.contains("250 2.0.0 Ok: queued as Q1\r\n"));
    assert!(o.output.contains("250-PIPELINING\r\n"));
    assert!(o.output.contains("250-SIZE 4000\r\n"));
    assert!(o.output.contains("250-ENHANCEDSTATUSCODES\r\n"));
    assert_eq!(o.stored.len(), 1);
    let tx = &o.stored[0];
    assert_eq!(tx.body, b"Subject: hi\r\n\r\nbody\r\n.dot\r\n");
    assert_eq!(tx.mail_from.as_ref().unwrap().to_string(), "a@sender.test");
    assert_eq!(tx.rcpts[0].to_string(), "b@dest.test");
    assert_eq!(tx.helo, "client.test");
    assert!(o.closed);
}

#[test]
fn empty_message_and_leading_dot_on_first_line() {
    let o = run(
        b"EHLO c\r\nMAIL FROM:<a@s.test>\r\nRCPT TO:<b@d.test>\r\nDATA\r\n.\r\n\
          MAIL FROM:<a@s.test>\r\nRCPT TO:<b@d.test>\r\nDATA\r\n..x\r\n.\r\n",
        true,
    );
    assert_eq!(o.stored.len(), 2);
    assert_eq!(o.stored[0].body, b"");
    assert_eq!(o.stored[1].body, b".x\r\n");
}

#[test]
fn two_messages_in_one_session_and_null_sender() {
    let o = run(
        b"HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<x@d.test>\r\nDATA\r\none\r\n.\r\n\
          MAIL FROM:<s@d.test>\r\nRCPT TO:<y@d.test>\r\nRCPT TO:<Y@D.TEST.>\r\nRCPT TO:<z@d.test>\r\nDATA\r\ntwo\r\n.\r\nQUIT\r\n",
        true,
    );
    assert_eq!(o.stored.len(), 2);
    assert!(o.stored[0].mail_from.is_none());
    assert_eq!(o.stored[0].body, b"one\r\n");
    let rcpts: Vec<String> = o.stored[1].rcpts.iter().map(|a| a.to_string()).collect();
    // Y@d.test differs from y@d.test in its local part, so both stay; the domain is normalised.
    assert_eq!(rcpts, ["y@d.test", "Y@d.test", "z@d.test"]);
    assert!(!o.stored[0].esmtp);
}

#[test]
fn smuggling_bare_lf_and_bare_cr_do_not_end_data() {
    let o = run(
        b"EHLO c\r\nMAIL FROM:<a@s.test>\r\nRCPT TO:<b@d.test>\r\nDATA\r\n\
          line\n.\nMAIL FROM:<evil@s.test>\r\nx\r.\rRCPT\r\n.\r\nQUIT\r\n",
        true,
    );
    assert_eq!(o.stored.len(), 1);
    assert_eq!(
        o.stored[0].body,
        b"line\n.\nMAIL FROM:<evil@s.test>\r\nx\r.\rRCPT\r\n"
    );
}

#[test]
fn out_of_order_commands() {
    let o = run(
        b"MAIL FROM:<a@s.test>\r\nEHLO c\r\nRCPT TO:<b@d.test>\r\nDATA\r\nMAIL FROM:<a@s.test>\r\n\
          MAIL FROM:<a@s.test>\r\nDATA\r\nBDAT 3\r\nabcQUIT\r\n",
        true,
    );
    assert_eq!(
        codes(&o.output),
        [
            "503 5.5.1",
            "250",
            "503 5.5.1",
            "503 5.5.1",
            "250 2.1.0",
            "503 5.5.1",
            "554 5.5.1",
            "503 5.5.1",
            "221 2.0.0"
        ]
    );
    assert!(o.stored.is_empty());
}

#[test]
fn syntax_errors_and_unknown_commands() {
    let o = run(
        b"EHLO c\r\nFOO bar\r\nMAIL FROM:<no-at-sign>\r\nMAIL FROM:<a@s.test> SIZE=abc\r\n\
          MAIL TO:<x@y.test>\r\nMAIL FROM:<a@s.test>\r\nRCPT TO:<\"a@b\"@d.test>\r\nRCPT TO:<a@-bad.test>\r\n\
          RCPT TO:<postmaster>\r\nVRFY a\r\nEXPN list\r\nHELP\r\nNOOP\r\nRSET\r\nQUIT\r\n",
        true,
    );
    assert_eq!(
        codes(&o.output),
        [
            "250",
            "500 5.5.1",
            "501 5.1.7",
            "501 5.5.4",
            "501 5.5.4",
            "250 2.1.0",
            "501 5.1.3",
            "501 5.1.2",
            "501 5.1.3",
            "252 2.5.0",
            "502 5.5.1",
            "214 2.0.0",
            "250 2.0.0",
            "250 2.0.0",
            "221 2.0.0"
        ]
    );
}

#[test]
fn long_command_line_is_refused_without_buffering_it() {
    let mut input = b"EHLO c\r\nNOOP ".to_vec();
    input.extend(std::iter::repeat_n(b'x', 1500));
    input.extend_from_slice(b"\r\nNOOP\r\n");
    let o = run_chunks(&[&input], true);
    assert_eq!(codes(&o.output), ["250", "500 5.5.2", "250 2.0.0"]);
    // The same split into chunks smaller than the limit.
    let chunks: Vec<&[u8]> = input.chunks(100).collect();
    assert_eq!(run_chunks(&chunks, true).output, o.output);
}

#[test]
fn long_data_line_refused() {
    let mut input = b"EHLO c\r\nMAIL FROM:<a@s.test>\r\nRCPT TO:<b@d.test>\r\nDATA\r\n".to_vec();
    input.extend(std::iter::repeat_n(b'y', 1001));
    input.extend_from_slice(b"\r\n.\r\nNOOP\r\n");
    let o = run_chunks(&[&input], true);
    assert_eq!(
        codes(&o.output),
        [
            "250",
            "250 2.1.0",
            "250 2.1.5",
            "354",
            "500 5.5.2",
            "250 2.0.0"
        ]
    );
    assert!(o.stored.is_empty());
}

#[test]
fn size_limits() {
    let mut input =
        b"EHLO c\r\nMAIL FROM:<a@s.test> SIZE=5000\r\nMAIL FROM:<a@s.test> SIZE=100\r\n\
                      RCPT TO:<b@d.test>\r\nDATA\r\n"
            .to_vec();
    for _ in 0..50 {
        input.extend_from_slice(&[b'z'; 98]);
        input.extend_from_slice(b"\r\n");
    }
    input.extend_from_slice(b".\r\nQUIT\r\n");
    let o = run(&input, true);
    assert_eq!(
        codes(&o.output),
        [
            "250",
            "552 5.3.4",
            "250 2.1.0",
            "250 2.1.5",
            "354",
            "552 5.3.4",
            "221 2.0.0"
        ]
    );
    assert!(o.stored.is_empty());
}

#[test]
fn too_many_recipients() {
    let o = run(
        b"EHLO c\r\nMAIL FROM:<a@s.test>\r\nRCPT TO:<1@d.test>\r\nRCPT TO:<2@d.test>\r\n\
          RCPT TO:<3@d.test>\r\nRCPT TO:<4@d.test>\r\nDATA\r\nx\r\n.\r\n",
        true,
    );
    assert_eq!(
        codes(&o.output),
        [
            "250",
            "250 2.1.0",
            "250 2.1.5",
            "250 2.1.5",
            "250 2.1.5",
            "452 4.5.3",
            "354",
            "250 2.0.0"
        ]
    );
    assert_eq!(o.stored[0].rcpts.len(), 3);
}

#[test]
fn no_open_relay_for_unauthorised_clients() {
    let cases: &[&str] = &[
        "user@elsewhere.test",
        "user%other.test@local.test",
        "other.test!user@local.test",
        "@local.test:user@elsewhere.test",
        "\"user@elsewhere.test\"@local.test",
        "user@ELSEWHERE.TEST.",
        "user@[127.0.0.1]",
        "user@[IPv6:::1]",
        "user@local.test.elsewhere.test",
    ];
    for rcpt in cases {
        let input = format!("EHLO c\r\nMAIL FROM:<a@s.test>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n");
        let o = run_chunks(&[input.as_bytes()], false);
        let c = codes(&o.output);
        assert!(
            c[2].starts_with('5'),
            "{rcpt} was not refused: {}",
            o.output
        );
        assert_eq!(
            c[3], "554 5.5.1",
            "{rcpt}: DATA must fail with no recipients"
        );
        assert!(o.stored.is_empty());
    }
    // The relay refusal itself is 550 5.7.1.
    let o = run_chunks(
        &[b"EHLO c\r\nMAIL FROM:<a@s.test>\r\nRCPT TO:<u@elsewhere.test>\r\n"],
        false,
    );
    assert!(
        o.output
            .contains("550 5.7.1 <u@elsewhere.test>: Relay access denied")
    );
    // Mail for a domain Keel accepts for is taken from anyone, case- and trailing-dot-blind.
    let o = run(
        b"EHLO c\r\nMAIL FROM:<a@s.test>\r\nRCPT TO:<u@LOCAL.test.>\r\nDATA\r\nx\r\n.\r\n",
        false,
    );
    assert_eq!(o.stored.len(), 1);
}

#[test]
fn bdat_chunking() {
    let o = run(
        b"EHLO c\r\nMAIL FROM:<a@s.test>\r\nRCPT TO:<b@d.test>\r\nBDAT 5\r\nab\r\ncBDAT 4 LAST\r\nd\r\n.NOOP\r\n",
        true,
    );
    assert_eq!(
        codes(&o.output),
        [
            "250",
            "250 2.1.0",
            "250 2.1.5",
            "250 2.0.0",
            "250 2.0.0",
            "250 2.0.0"
        ]
    );
    assert_eq!(o.stored.len(), 1);
    // BDAT carries bytes verbatim: no dot-unstuffing, no end-of-data detection.
    assert_eq!(o.stored[0].body, b"ab\r\ncd\r\n.");
    // BDAT 0 LAST ends the message at once.
    let o = run(
        b"EHLO c\r\nMAIL FROM:<a@s.test>\r\nRCPT TO:<b@d.test>\r\nBDAT 2\r\nhiBDAT 0 LAST\r\n",
        true,
    );
    assert_eq!(o.stored[0].body, b"hi");
}

#[test]
fn store_failure_is_reported_and_session_continues() {
    let peer = Peer {
        ip: "192.0.2.1".parse().unwrap(),
        relay_allowed: true,
    };
    let mut s = Session::new(config(), peer);
    let step = s.receive(
        b"EHLO c\r\nMAIL FROM:<a@s.test>\r\nRCPT TO:<b@d.test>\r\nDATA\r\nx\r\n.\r\nNOOP\r\n",
    );
    let Next::Store(_) = step.next else {
        panic!("expected a message to store")
    };
    let err = keel_smtp::Reply::new(451, keel_smtp::Enhanced(4, 3, 0), "Spool write failed");
    let step = s.stored(Err(err));
    let out = String::from_utf8(step.output).unwrap();
    assert_eq!(out, "451 4.3.0 Spool write failed\r\n250 2.0.0 Ok\r\n");
}

#[test]
fn loops_are_detected() {
    let mut input = b"EHLO c\r\nMAIL FROM:<a@s.test>\r\nRCPT TO:<b@d.test>\r\nDATA\r\n".to_vec();
    for i in 0..101 {
        input.extend_from_slice(format!("Received: from hop{i}\r\n").as_bytes());
    }
    input.extend_from_slice(b"\r\nbody\r\n.\r\n");
    let o = run_chunks(&[&input], true);
    assert!(o.output.contains("554 5.4.6"));
    assert!(o.stored.is_empty());
}

#[test]
fn too_many_errors_closes() {
    let input = "FOO\r\n".repeat(25);
    let o = run_chunks(&[input.as_bytes()], true);
    assert!(o.closed);
    assert!(
        o.output
            .ends_with("421 4.7.0 Too many errors, closing connection\r\n")
    );
}

#[test]
fn greeting_and_timeout_replies() {
    let peer = Peer {
        ip: "192.0.2.1".parse().unwrap(),
        relay_allowed: true,
    };
    let mut s = Session::new(config(), peer);
    assert_eq!(s.greeting(), b"220 mx.keel.test ESMTP Keel\r\n");
    assert_eq!(s.read_timeout(), std::time::Duration::from_secs(300));
    let _ = s.receive(b"EHLO c\r\nMAIL FROM:<a@s.test>\r\nRCPT TO:<b@d.test>\r\nDATA\r\n");
    assert_eq!(s.read_timeout(), std::time::Duration::from_secs(180));
    assert!(s.in_data());
    assert!(
        String::from_utf8(s.timeout())
            .unwrap()
            .starts_with("421 4.4.2")
    );
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// Any body, dot-stuffed on the wire, comes back byte-exact, however it is chunked.
        #[test]
        fn dot_stuffing_round_trips(lines in proptest::collection::vec("[.a-z]{0,20}", 0..20), cut in 1usize..40) {
            let mut body = Vec::new();
            for l in &lines { body.extend_from_slice(l.as_bytes()); body.extend_from_slice(b"\r\n"); }
            let mut wire = b"EHLO c\r\nMAIL FROM:<a@s.test>\r\nRCPT TO:<b@d.test>\r\nDATA\r\n".to_vec();
            for l in &lines {
                if l.starts_with('.') { wire.push(b'.'); }
                wire.extend_from_slice(l.as_bytes()); wire.extend_from_slice(b"\r\n");
            }
            wire.extend_from_slice(b".\r\n");
            let chunks: Vec<&[u8]> = wire.chunks(cut).collect();
            let o = run_chunks(&chunks, true);
            prop_assert_eq!(o.stored.len(), 1);
            prop_assert_eq!(&o.stored[0].body, &body);
            // The same when the whole message arrives in one read.
            let o = run_chunks(&[&wire], true);
            prop_assert_eq!(&o.stored[0].body, &body);
        }

        /// Arbitrary input never panics and never produces a reply without a code.
        #[test]
        fn arbitrary_input_is_handled(input in proptest::collection::vec(any::<u8>(), 0..600)) {
            let o = run_chunks(&[&input], false);
            for line in o.output.split("\r\n").filter(|l| !l.is_empty()) {
                prop_assert!(line.len() >= 3 && line.as_bytes()[..3].iter().all(u8::is_ascii_digit), "{}", line);
            }
            prop_assert!(o.stored.is_empty(), "an unauthorised client stored a message for a foreign domain");
        }
    }
}

/// Back-pressure "defer": MAIL and RCPT get 452 4.3.1 without counting as client errors, and
/// the session accepts again once the caller clears the flag.
#[test]
fn deferred_transactions_get_452_and_resume() {
    let peer = Peer {
        ip: "192.0.2.1".parse().unwrap(),
        relay_allowed: true,
    };
    let mut s = Session::new(config(), peer);
    let text = |step: keel_smtp::Step| String::from_utf8(step.output).unwrap();
    assert!(text(s.receive(b"EHLO c\r\n")).starts_with("250"));
    s.set_defer_transactions(true);
    for _ in 0..30 {
        let out = text(s.receive(b"MAIL FROM:<a@b.test>\r\n"));
        assert!(out.starts_with("452 4.3.1 "), "{out}");
    }
    s.set_defer_transactions(false);
    assert!(text(s.receive(b"MAIL FROM:<a@b.test>\r\n")).starts_with("250"));
    assert_eq!(s.mails_accepted(), 1);
    s.set_defer_transactions(true);
    let out = text(s.receive(b"RCPT TO:<x@y.test>\r\n"));
    assert!(out.starts_with("452 4.3.1 "), "{out}");
    s.set_defer_transactions(false);
    let out = text(s.receive(b"RCPT TO:<x@y.test>\r\n"));
    assert!(out.starts_with("250"), "{out}");
}
