//! STARTTLS and AUTH in the server session, as table tests re-run at every byte split.
//!
//! A conversation is a list of phases separated by TLS handshakes: phase 0 is plaintext, and
//! when the session asks for [`Next::StartTls`] the harness "runs the handshake" by calling
//! [`Session::tls_started`] and goes on with the next phase. Plaintext chunks still unfed at
//! that point are dropped, as a real handshake would consume them (and fail); so the outcome
//! must not depend on where the network split the input.

use std::net::IpAddr;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keel_smtp::sasl::encode_plain;
use keel_smtp::{AuthOutcome, Mechanism, Next, Peer, ServerConfig, Session, Transaction};
use proptest::prelude::*;

const ALICE: &str = "alice";
const ALICE_PW: &str = "s3cret pass";

fn config(starttls: bool, auth: bool, plaintext_loopback: bool) -> Arc<ServerConfig> {
    let mut c = ServerConfig::new("mx.keel.test");
    c.local_domains = vec!["local.test".into()];
    c.starttls = starttls;
    c.auth = auth;
    c.auth_plaintext_loopback = plaintext_loopback;
    Arc::new(c)
}

fn tls_and_auth() -> Arc<ServerConfig> {
    config(true, true, false)
}

/// An outside client: not loopback, not in relay_networks.
fn outsider() -> Peer {
    Peer {
        ip: "192.0.2.1".parse().unwrap(),
        relay_allowed: false,
    }
}

fn local(ip: &str) -> Peer {
    Peer {
        ip: ip.parse::<IpAddr>().unwrap(),
        relay_allowed: false,
    }
}

#[derive(Debug, PartialEq)]
struct Outcome {
    output: String,
    stored: Vec<Transaction>,
    /// Every credential check asked for, as (mechanism, user, password).
    checks: Vec<(Mechanism, String, String)>,
    handshakes: usize,
    closed: bool,
}

/// The verifier: alice's password is right (tenant "acme"); after `max_failures` wrong
/// answers the client is over its limit.
struct Verifier {
    failures: usize,
    max_failures: usize,
}

impl Verifier {
    fn check(&mut self, user: &str, password: &str) -> AuthOutcome {
        if self.failures >= self.max_failures {
            return AuthOutcome::TooManyFailures;
        }
        if user == ALICE && password == ALICE_PW {
            AuthOutcome::Accepted {
                tenant: Some("acme".into()),
            }
        } else {
            self.failures += 1;
            if self.failures >= self.max_failures {
                AuthOutcome::TooManyFailures
            } else {
                AuthOutcome::Rejected
            }
        }
    }
}

fn run_phases(
    cfg: &Arc<ServerConfig>,
    peer: Peer,
    phases: &[Vec<&[u8]>],
    max_failures: usize,
) -> Outcome {
    let mut s = Session::new(cfg.clone(), peer);
    let mut verifier = Verifier {
        failures: 0,
        max_failures,
    };
    let mut o = Outcome {
        output: String::new(),
        stored: Vec::new(),
        checks: Vec::new(),
        handshakes: 0,
        closed: false,
    };
    let mut phase = 0;
    'phases: while phase < phases.len() {
        for chunk in &phases[phase] {
            let mut step = s.receive(chunk);
            loop {
                o.output.push_str(&String::from_utf8(step.output).unwrap());
                match step.next {
                    Next::Read => break,
                    Next::Close => {
                        o.closed = true;
                        break 'phases;
                    }
                    Next::Store(tx) => {
                        o.stored.push(tx);
                        step = s.stored(Ok(format!("Q{}", o.stored.len())));
                    }
                    Next::Authenticate(c) => {
                        let verdict = verifier.check(&c.username, c.password.expose());
                        o.checks
                            .push((c.mechanism, c.username, c.password.expose().into()));
                        step = s.auth_result(verdict);
                    }
                    Next::StartTls => {
                        s.tls_started();
                        o.handshakes += 1;
                        phase += 1;
                        continue 'phases;
                    }
                }
            }
        }
        phase += 1;
    }
    o
}

/// Runs the phases whole, with each phase split at every byte position, and byte by byte;
/// asserts that all agree and returns the whole-input outcome.
fn run_with(cfg: &Arc<ServerConfig>, peer: Peer, phases: &[&[u8]], max_failures: usize) -> Outcome {
    let whole: Vec<Vec<&[u8]>> = phases.iter().map(|p| vec![*p]).collect();
    let expected = run_phases(cfg, peer, &whole, max_failures);
    for (i, p) in phases.iter().enumerate() {
        for at in 1..p.len() {
            let mut split = whole.clone();
            split[i] = vec![&p[..at], &p[at..]];
            let got = run_phases(cfg, peer, &split, max_failures);
            assert_eq!(got, expected, "phase {i} split at {at}");
        }
    }
    let bytes: Vec<Vec<&[u8]>> = phases.iter().map(|p| p.chunks(1).collect()).collect();
    assert_eq!(
        run_phases(cfg, peer, &bytes, max_failures),
        expected,
        "byte by byte"
    );
    expected
}

fn run(cfg: &Arc<ServerConfig>, peer: Peer, phases: &[&[u8]]) -> Outcome {
    run_with(cfg, peer, phases, 100)
}

/// The final line of each reply: `"250"`, or `"535 5.7.8"` when it has an enhanced code.
fn codes(output: &str) -> Vec<String> {
    output
        .split("\r\n")
        .filter(|l| l.len() >= 4 && l.as_bytes()[3] == b' ')
        .map(|l| {
            let mut parts = l.splitn(3, ' ');
            let code = parts.next().unwrap_or("");
            let second = parts.next().unwrap_or("");
            if second.starts_with(|c: char| c.is_ascii_digit()) && second.contains('.') {
                format!("{code} {second}")
            } else {
                code.to_string()
            }
        })
        .collect()
}

/// The EHLO reply's keywords, in order, without the greeting line.
fn ehlo_keywords(output: &str) -> Vec<&str> {
    output
        .split("\r\n")
        .filter(|l| l.starts_with("250-") || l.starts_with("250 "))
        .skip(1)
        .map(|l| &l[4..])
        .collect()
}

fn plain(user: &str, password: &str) -> String {
    format!("AUTH PLAIN {}\r\n", encode_plain(user, password))
}

fn b64(text: &str) -> String {
    STANDARD.encode(text)
}

#[test]
fn starttls_then_auth_then_relay() {
    let after_tls = format!(
        "EHLO c.test\r\n{}MAIL FROM:<a@s.test>\r\nRCPT TO:<x@elsewhere.test>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n",
        plain(ALICE, ALICE_PW)
    );
    let before_tls = format!("EHLO c.test\r\n{}STARTTLS\r\n", plain(ALICE, ALICE_PW));
    let o = run(
        &tls_and_auth(),
        outsider(),
        &[before_tls.as_bytes(), after_tls.as_bytes()],
    );
    assert_eq!(
        codes(&o.output),
        [
            "250",
            "538 5.7.11",
            "220 2.0.0",
            "250",
            "235 2.7.0",
            "250 2.1.0",
            "250 2.1.5",
            "354",
            "250 2.0.0",
            "221 2.0.0"
        ],
        "{}",
        o.output
    );
    assert!(o.output.contains("220 2.0.0 Ready to start TLS\r\n"));
    assert!(
        o.output
            .contains("538 5.7.11 Encryption required for requested authentication mechanism\r\n")
    );
    // Before TLS: STARTTLS offered, AUTH not. After: the reverse.
    let (first, second) = o.output.split_once("220 2.0.0").unwrap();
    let before = ehlo_keywords(first);
    assert!(before.contains(&"STARTTLS"), "{before:?}");
    assert!(!before.iter().any(|k| k.starts_with("AUTH")), "{before:?}");
    let after = ehlo_keywords(second);
    assert!(!after.contains(&"STARTTLS"), "{after:?}");
    assert!(after.contains(&"AUTH PLAIN LOGIN"), "{after:?}");
    // The refused AUTH before TLS never reached the verifier.
    assert_eq!(
        o.checks,
        [(Mechanism::Plain, ALICE.into(), ALICE_PW.into())]
    );
    assert_eq!(o.handshakes, 1);
    let tx = &o.stored[0];
    assert!(tx.tls);
    let auth = tx.authenticated.as_ref().unwrap();
    assert_eq!(
        (auth.user.as_str(), auth.tenant.as_deref()),
        (ALICE, Some("acme"))
    );
    assert_eq!(tx.protocol(), "ESMTPSA");
    assert_eq!(tx.body, b"hi\r\n");
}

#[test]
fn plaintext_pipelined_after_starttls_is_discarded() {
    // CVE-2011-0411: a man in the middle appends commands to the client's STARTTLS; they must
    // not be executed as if they came over TLS.
    let o = run(
        &tls_and_auth(),
        outsider(),
        &[
            b"EHLO c.test\r\nSTARTTLS\r\nMAIL FROM:<evil@s.test>\r\nRCPT TO:<x@local.test>\r\nRSET\r\n",
            b"MAIL FROM:<a@s.test>\r\nEHLO c.test\r\nMAIL FROM:<a@s.test>\r\nRCPT TO:<x@local.test>\r\n",
        ],
    );
    assert_eq!(
        codes(&o.output),
        [
            "250",
            "220 2.0.0",
            "503 5.5.1",
            "250",
            "250 2.1.0",
            "250 2.1.5"
        ],
        "{}",
        o.output
    );
    assert!(o.output.contains("503 5.5.1 Send EHLO or HELO first\r\n"));
}

#[test]
fn input_fed_while_the_handshake_is_pending_is_dropped() {
    let mut s = Session::new(tls_and_auth(), outsider());
    let step = s.receive(b"EHLO c.test\r\nSTARTTLS\r\n");
    assert!(matches!(step.next, Next::StartTls));
    // A careless caller reads plaintext before the handshake: it is not a command.
    let step = s.receive(b"MAIL FROM:<evil@s.test>\r\n");
    assert!(step.output.is_empty());
    assert!(matches!(step.next, Next::StartTls));
    s.tls_started();
    assert!(s.is_tls());
    let step = s.receive(b"MAIL FROM:<a@s.test>\r\n");
    assert!(
        String::from_utf8(step.output)
            .unwrap()
            .starts_with("503 5.5.1")
    );
}

#[test]
fn starttls_forgets_ehlo_transaction_and_authentication() {
    let cfg = config(true, true, true);
    let before = format!(
        "EHLO c.test\r\n{}MAIL FROM:<a@s.test>\r\nSTARTTLS\r\n",
        plain(ALICE, ALICE_PW)
    );
    let o = run(
        &cfg,
        local("127.0.0.1"),
        &[
            before.as_bytes(),
            b"RCPT TO:<x@local.test>\r\nEHLO c.test\r\nMAIL FROM:<a@s.test>\r\nRCPT TO:<x@elsewhere.test>\r\n",
        ],
    );
    assert_eq!(
        codes(&o.output),
        [
            "250",
            "235 2.7.0",
            "250 2.1.0",
            "220 2.0.0",
            "503 5.5.1",
            "250",
            "250 2.1.0",
            "550 5.7.1"
        ],
        "{}",
        o.output
    );
}

#[test]
fn starttls_refusals() {
    // Not configured.
    let o = run(
        &config(false, true, false),
        outsider(),
        &[b"EHLO c\r\nSTARTTLS\r\n"],
    );
    assert_eq!(codes(&o.output), ["250", "502 5.5.1"]);
    assert!(!ehlo_keywords(&o.output).contains(&"STARTTLS"));
    // Already active.
    let o = run(
        &tls_and_auth(),
        outsider(),
        &[b"EHLO c\r\nSTARTTLS\r\n", b"EHLO c\r\nSTARTTLS\r\nNOOP\r\n"],
    );
    assert_eq!(
        codes(&o.output),
        ["250", "220 2.0.0", "250", "503 5.5.1", "250 2.0.0"]
    );
    assert_eq!(o.handshakes, 1);
}

#[test]
fn auth_login_prompts_for_username_then_password() {
    let after = format!(
        "EHLO c\r\nAUTH LOGIN\r\n{}\r\n{}\r\n",
        b64(ALICE),
        b64(ALICE_PW)
    );
    let o = run(
        &tls_and_auth(),
        outsider(),
        &[b"EHLO c\r\nSTARTTLS\r\n", after.as_bytes()],
    );
    assert_eq!(
        codes(&o.output),
        ["250", "220 2.0.0", "250", "334", "334", "235 2.7.0"]
    );
    assert!(
        o.output
            .contains("334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n")
    );
    assert_eq!(
        o.checks,
        [(Mechanism::Login, ALICE.into(), ALICE_PW.into())]
    );
    // With the username as initial response there is only the password prompt.
    let after = format!(
        "EHLO c\r\nAUTH LOGIN {}\r\n{}\r\n",
        b64(ALICE),
        b64(ALICE_PW)
    );
    let o = run(
        &tls_and_auth(),
        outsider(),
        &[b"EHLO c\r\nSTARTTLS\r\n", after.as_bytes()],
    );
    assert_eq!(
        codes(&o.output),
        ["250", "220 2.0.0", "250", "334", "235 2.7.0"]
    );
}

#[test]
fn auth_plain_without_initial_response_gets_an_empty_challenge() {
    let after = format!(
        "EHLO c\r\nAUTH PLAIN\r\n{}\r\n",
        encode_plain(ALICE, ALICE_PW)
    );
    let o = run(
        &tls_and_auth(),
        outsider(),
        &[b"EHLO c\r\nSTARTTLS\r\n", after.as_bytes()],
    );
    assert!(o.output.contains("\r\n334 \r\n235 2.7.0"), "{}", o.output);
}

#[test]
fn auth_error_replies() {
    let after = format!(
        "AUTH PLAIN {pw}\r\n\
         EHLO c\r\n\
         {wrong}\
         {unknown_user}\
         AUTH CRAM-MD5\r\n\
         AUTH PLAIN not-base64!\r\n\
         AUTH PLAIN {malformed}\r\n\
         AUTH LOGIN\r\n*\r\n\
         AUTH PLAIN\r\n*\r\n\
         AUTH PLAIN {proxy}\r\n\
         MAIL FROM:<a@s.test>\r\n\
         {plain}\
         RSET\r\n\
         {plain}\
         {plain}\
         RCPT TO:<x@elsewhere.test>\r\n",
        pw = encode_plain(ALICE, ALICE_PW),
        wrong = plain(ALICE, "wrong"),
        unknown_user = plain("mallory", ALICE_PW),
        malformed = b64("no nul here"),
        proxy = STANDARD.encode(format!("admin\0{ALICE}\0{ALICE_PW}")),
        plain = plain(ALICE, ALICE_PW),
    );
    let o = run(
        &tls_and_auth(),
        outsider(),
        &[b"STARTTLS\r\n", after.as_bytes()],
    );
    assert_eq!(
        codes(&o.output),
        [
            "220 2.0.0",
            "503 5.5.1", // AUTH before EHLO
            "250",
            "535 5.7.8", // wrong password
            "535 5.7.8", // unknown user: the same reply
            "504 5.5.4", // unknown mechanism
            "501 5.5.2", // bad base64
            "501 5.5.2", // not a PLAIN message
            "334",
            "501 5.0.0", // LOGIN cancelled
            "334",
            "501 5.0.0", // PLAIN cancelled
            "535 5.7.8", // authorization identity of someone else
            "250 2.1.0",
            "503 5.5.1", // AUTH during a transaction
            "250 2.0.0",
            "235 2.7.0",
            "503 5.5.1", // already authenticated
            "503 5.5.1", // RCPT without MAIL (RSET ended the transaction)
        ],
        "{}",
        o.output
    );
    assert!(
        o.output
            .contains("535 5.7.8 Authentication credentials invalid\r\n")
    );
    assert!(
        o.output
            .contains("504 5.5.4 Unrecognized authentication type\r\n")
    );
    assert!(o.output.contains("501 5.0.0 Authentication cancelled\r\n"));
    assert!(o.output.contains("503 5.5.1 Already authenticated\r\n"));
    // Only well-formed credentials were checked.
    let users: Vec<&str> = o.checks.iter().map(|c| c.1.as_str()).collect();
    assert_eq!(users, [ALICE, "mallory", ALICE]);
}

#[test]
fn auth_requires_ehlo_not_helo_and_users() {
    let o = run(
        &tls_and_auth(),
        outsider(),
        &[
            b"STARTTLS\r\n",
            plain(ALICE, ALICE_PW)
                .replace("AUTH", "HELO c\r\nAUTH")
                .as_bytes(),
        ],
    );
    assert_eq!(codes(&o.output), ["220 2.0.0", "250", "503 5.5.1"]);
    // No users configured: no AUTH at all.
    let o = run(
        &config(true, false, false),
        outsider(),
        &[
            b"STARTTLS\r\n",
            format!("EHLO c\r\n{}", plain(ALICE, ALICE_PW)).as_bytes(),
        ],
    );
    assert_eq!(codes(&o.output), ["220 2.0.0", "250", "502 5.5.1"]);
    assert!(
        !ehlo_keywords(&o.output)
            .iter()
            .any(|k| k.starts_with("AUTH")),
        "{}",
        o.output
    );
}

#[test]
fn too_many_failures_closes_the_connection() {
    let after = format!(
        "EHLO c\r\n{}{}{}NOOP\r\n",
        plain(ALICE, "a"),
        plain(ALICE, "b"),
        plain(ALICE, "c")
    );
    let o = run_with(
        &tls_and_auth(),
        outsider(),
        &[b"EHLO c\r\nSTARTTLS\r\n", after.as_bytes()],
        2,
    );
    assert_eq!(
        codes(&o.output),
        ["250", "220 2.0.0", "250", "535 5.7.8", "421 4.7.0"]
    );
    assert!(o.closed);
    assert!(o.output.ends_with(
        "421 4.7.0 mx.keel.test Too many authentication failures from your address, try again later\r\n"
    ));
}

#[test]
fn plaintext_auth_only_for_loopback_when_opted_in() {
    let session = format!("EHLO c\r\n{}", plain(ALICE, ALICE_PW));
    let opted_in = config(false, true, true);
    for ip in ["127.0.0.1", "127.3.2.1", "::1", "::ffff:127.0.0.1"] {
        let o = run(&opted_in, local(ip), &[session.as_bytes()]);
        assert!(
            ehlo_keywords(&o.output).contains(&"AUTH PLAIN LOGIN"),
            "{ip}"
        );
        assert_eq!(codes(&o.output), ["250", "235 2.7.0"], "{ip}");
    }
    // Not loopback: refused even with the opt-in.
    let o = run(&opted_in, outsider(), &[session.as_bytes()]);
    assert_eq!(codes(&o.output), ["250", "538 5.7.11"]);
    // Loopback without the opt-in: TLS first.
    let o = run(&tls_and_auth(), local("127.0.0.1"), &[session.as_bytes()]);
    assert_eq!(codes(&o.output), ["250", "538 5.7.11"]);
    assert!(!o.output.contains("AUTH PLAIN"));
}

#[test]
fn authenticated_loopback_plaintext_is_esmtpa() {
    let session = format!(
        "EHLO c\r\n{}MAIL FROM:<a@s.test>\r\nRCPT TO:<x@elsewhere.test>\r\nDATA\r\nx\r\n.\r\n",
        plain(ALICE, ALICE_PW)
    );
    let o = run(
        &config(false, true, true),
        local("127.0.0.1"),
        &[session.as_bytes()],
    );
    assert_eq!(o.stored.len(), 1);
    assert_eq!(o.stored[0].protocol(), "ESMTPA");
    assert!(!o.stored[0].tls);
}

#[test]
fn protocol_names_follow_rfc_3848_and_6531() {
    let mut tx = Transaction {
        helo: "c".into(),
        esmtp: true,
        mail_from: None,
        rcpts: Vec::new(),
        body: Vec::new(),
        smtputf8: false,
        body_8bit: false,
        tls: false,
        authenticated: None,
    };
    assert_eq!(tx.protocol(), "ESMTP");
    tx.tls = true;
    assert_eq!(tx.protocol(), "ESMTPS");
    tx.smtputf8 = true;
    assert_eq!(tx.protocol(), "UTF8SMTPS");
    tx.authenticated = Some(keel_smtp::Authenticated {
        user: "u".into(),
        tenant: None,
    });
    assert_eq!(tx.protocol(), "UTF8SMTPSA");
    tx.smtputf8 = false;
    assert_eq!(tx.protocol(), "ESMTPSA");
    tx.tls = false;
    assert_eq!(tx.protocol(), "ESMTPA");
    tx.esmtp = false;
    assert_eq!(tx.protocol(), "SMTP");
}

#[test]
fn auth_lines_may_exceed_the_command_limit_up_to_12288() {
    let long_pw = "p".repeat(3000);
    let input = format!(
        "EHLO c\r\n{}AUTH LOGIN\r\n{}\r\n",
        plain(ALICE, &long_pw),
        "A".repeat(13000)
    );
    for chunk in [input.len(), 100, 7] {
        let chunks: Vec<&[u8]> = input.as_bytes().chunks(chunk).collect();
        let o = run_phases(
            &config(false, true, true),
            local("127.0.0.1"),
            &[chunks],
            100,
        );
        assert_eq!(
            codes(&o.output),
            ["250", "535 5.7.8", "334", "500 5.5.6"],
            "chunks of {chunk}"
        );
        assert_eq!(o.checks[0].2, long_pw);
    }
    // Other commands keep the normal limit.
    let input = format!("EHLO c\r\nNOOP {}\r\nNOOP\r\n", "x".repeat(3000));
    let o = run_phases(
        &config(false, true, true),
        local("127.0.0.1"),
        &[vec![input.as_bytes()]],
        100,
    );
    assert_eq!(codes(&o.output), ["250", "500 5.5.2", "250 2.0.0"]);
}

#[test]
fn passwords_do_not_show_in_debug_output() {
    let mut s = Session::new(config(false, true, true), local("127.0.0.1"));
    let step = s.receive(format!("EHLO c\r\n{}", plain(ALICE, "hunter2")).as_bytes());
    let shown = format!("{:?}", step.next);
    assert!(shown.contains("Authenticate"), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    /// Whatever follows STARTTLS in the same read is never answered.
    #[test]
    fn nothing_after_starttls_is_answered(tail in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut input = b"EHLO c\r\nSTARTTLS\r\n".to_vec();
        input.extend_from_slice(&tail);
        let mut s = Session::new(tls_and_auth(), outsider());
        let step = s.receive(&input);
        prop_assert!(matches!(step.next, Next::StartTls));
        let out = String::from_utf8(step.output).unwrap();
        prop_assert!(out.ends_with("250 HELP\r\n220 2.0.0 Ready to start TLS\r\n"), "{}", out);
    }

    /// Arbitrary input after TLS never authenticates anyone the verifier did not accept, and
    /// never relays for an unauthenticated outsider.
    #[test]
    fn arbitrary_input_never_relays_without_auth(input in proptest::collection::vec(any::<u8>(), 0..400)) {
        let o = run_phases(&tls_and_auth(), outsider(), &[vec![b"STARTTLS\r\n"], vec![&input]], 3);
        for tx in &o.stored {
            let authenticated = tx.authenticated.is_some();
            prop_assert!(authenticated || tx.rcpts.iter().all(|r| r.domain_name() == Some("local.test")));
        }
    }
}
