//! Messages signed by keel-dkim, with keys made by its own `keygen`, verified by two
//! independent implementations: dkimpy (Python, out of process, tests/peers/dkim_verify.py) and mail-auth's
//! verifier (in process). A tampered copy must fail, which proves the verification can fail.

mod common;

use common::*;
use keel_dkim::GeneratedKey;
use mail_auth::DkimResult;

/// The test corpus. `{D}` is replaced by the From domain.
fn corpus() -> Vec<(&'static str, String)> {
    let big_line = "All work and no play makes Jack a dull boy. ".repeat(3);
    let big_body: String = (0..2400)
        .map(|i| format!("{i:05} {big_line}\r\n"))
        .collect();
    vec![
        (
            "plain",
            "From: Acme News <news@{D}>\r\n\
             To: Alice <alice@example.net>\r\n\
             Subject: Hello\r\n\
             Date: Tue, 14 Apr 2026 10:00:00 +0000\r\n\
             Message-ID: <1@{D}>\r\n\
             \r\n\
             Hello Alice,\r\n\r\nthis is a test.\r\n"
                .into(),
        ),
        (
            "multipart",
            "From: news@{D}\r\n\
             To: alice@example.net\r\n\
             Subject: Multipart\r\n\
             MIME-Version: 1.0\r\n\
             Content-Type: multipart/alternative; boundary=\"b1\"\r\n\
             \r\n\
             This is a multi-part message in MIME format.\r\n\
             --b1\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\
             Content-Transfer-Encoding: quoted-printable\r\n\
             \r\n\
             Gr=C3=BC=C3=9Fe\r\n\
             --b1\r\n\
             Content-Type: text/html; charset=utf-8\r\n\
             Content-Transfer-Encoding: base64\r\n\
             \r\n\
             PHA+R3LDvMOfZTwvcD4=\r\n\
             --b1--\r\n"
                .into(),
        ),
        (
            "folded headers and odd whitespace",
            "From: \"Acme\r\n\t News\" <news@{D}>\r\n\
             To: alice@example.net,\r\n  bob@example.net,\r\n\tcarol@example.net\r\n\
             Subject:   a   long subject line that has been\r\n \t folded  over\r\n   three lines  \r\n\
             Content-Type: text/plain;\r\n charset=us-ascii\r\n\
             \r\n\
             trailing spaces   \r\n\ttabbed\tline\t\r\n  \r\nend\r\n"
                .into(),
        ),
        (
            "8-bit UTF-8 subject and body",
            "From: Jörg <joerg@{D}>\r\n\
             To: alice@example.net\r\n\
             Subject: Grüße aus Köln — ☕ und 🦀\r\n\
             MIME-Version: 1.0\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\
             Content-Transfer-Encoding: 8bit\r\n\
             \r\n\
             Schöne Grüße, ¡olé! 你好\r\n"
                .into(),
        ),
        (
            "CRLF body with blank lines, trailing empty lines",
            "From: news@{D}\r\nTo: alice@example.net\r\nSubject: blank lines\r\n\r\n\
             \r\nfirst\r\n\r\n\r\nsecond\r\n\r\n\r\n\r\n"
                .into(),
        ),
        (
            "body without final CRLF",
            "From: news@{D}\r\nTo: alice@example.net\r\nSubject: no final CRLF\r\n\r\n\
             line one\r\nline two without CRLF"
                .into(),
        ),
        (
            "empty body",
            "From: news@{D}\r\nTo: alice@example.net\r\nSubject: empty\r\n\r\n".into(),
        ),
        (
            "one-click unsubscribe",
            "From: news@{D}\r\n\
             To: alice@example.net\r\n\
             Subject: Newsletter\r\n\
             List-Unsubscribe: <https://{D}/u/abc>, <mailto:unsub@{D}?subject=abc>\r\n\
             List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\
             X-Campaign: 42\r\n\
             \r\n\
             News.\r\n"
                .into(),
        ),
        (
            "header names in odd case",
            "fROM: news@{D}\r\nSUBJECT: case\r\nto: alice@example.net\r\n\r\nbody\r\n".into(),
        ),
        ("100 KB body", format!("From: news@{{D}}\r\nSubject: big\r\n\r\n{big_body}")),
    ]
}

fn messages_for(domain: &str) -> Vec<(&'static str, Vec<u8>)> {
    corpus()
        .into_iter()
        .map(|(name, m)| (name, m.replace("{D}", domain).into_bytes()))
        .collect()
}

/// Signs every corpus message from `domain` and checks it with both verifiers.
async fn sign_and_verify_all(domain: &str, entries: &[(&str, &str, &GeneratedKey)], expect: usize) {
    let f = fixture(entries);
    for (name, message) in messages_for(domain) {
        let header = f
            .signers
            .sign(&message)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .unwrap_or_else(|| panic!("{name}: no key matched"));
        assert_eq!(
            header.matches("DKIM-Signature:").count(),
            expect,
            "{name}: {header}"
        );
        assert!(header.ends_with("\r\n"), "{name}");
        let signed = prepend(&header, &message);

        if let Err(why) = dkimpy(&signed, &f.records) {
            panic!("{name}: dkimpy rejected the signature:\n{header}\n{why}");
        }
        if !message.ends_with(b"\r\n") {
            // Keel's DATA writer (keel_smtp::data::stuff) ends such a body with CRLF on the
            // wire; relaxed body canonicalisation makes that the same signed content.
            let mut sent = signed.clone();
            sent.extend_from_slice(b"\r\n");
            if let Err(why) = dkimpy(&sent, &f.records) {
                panic!("{name}: dkimpy rejected it with CRLF appended:\n{why}");
            }
        }
        let results = mail_auth_verify(&signed, &f.records).await;
        assert_eq!(results.len(), expect, "{name}: {results:?}");
        assert!(
            results.iter().all(|r| *r == DkimResult::Pass),
            "{name}: mail-auth: {results:?}"
        );
    }
}

#[tokio::test]
async fn rsa_signatures_verify() {
    sign_and_verify_all("acme.example", &[("acme.example", "rsa1", rsa_key())], 1).await;
}

#[tokio::test]
async fn ed25519_signatures_verify() {
    sign_and_verify_all("ed.example", &[("ed.example", "ed1", ed_key())], 1).await;
}

#[tokio::test]
async fn dual_rsa_and_ed25519_signatures_verify() {
    sign_and_verify_all(
        "dual.example",
        &[
            ("dual.example", "r", rsa_key()),
            ("dual.example", "e", ed_key()),
        ],
        2,
    )
    .await;
}

#[tokio::test]
async fn subdomain_mail_is_signed_with_the_parent_domain_and_verifies() {
    let f = fixture(&[("acme.example", "rsa1", rsa_key())]);
    let message = b"From: news@mail.news.acme.example\r\nSubject: sub\r\n\r\nhi\r\n";
    let header = f.signers.sign(message).unwrap().expect("parent key signs");
    assert_eq!(tag(&header, "d").as_deref(), Some("acme.example"));
    let signed = prepend(&header, message);
    dkimpy(&signed, &f.records).expect("dkimpy");
    assert_eq!(
        mail_auth_verify(&signed, &f.records).await,
        [DkimResult::Pass]
    );
}

#[test]
fn signature_tags() {
    let f = fixture(&[
        ("acme.example", "rsa1", rsa_key()),
        ("ed.example", "ed1", ed_key()),
    ]);
    let messages = messages_for("acme.example");
    let (_, unsub) = messages
        .iter()
        .find(|(n, _)| *n == "one-click unsubscribe")
        .expect("corpus");
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = f.signers.sign(unsub).unwrap().unwrap();
    assert!(header.starts_with(
        "DKIM-Signature: v=1; a=rsa-sha256; s=rsa1; d=acme.example; c=relaxed/relaxed;"
    ));
    // Only present fields, From included, X-Campaign not. mail-auth lists them bottom-up.
    let mut h: Vec<String> = tag(&header, "h")
        .unwrap()
        .split(':')
        .map(str::to_ascii_lowercase)
        .collect();
    h.sort();
    assert_eq!(
        h,
        [
            "from",
            "list-unsubscribe",
            "list-unsubscribe-post",
            "subject",
            "to"
        ]
    );
    let t: u64 = tag(&header, "t").unwrap().parse().unwrap();
    assert!(t >= before && t <= before + 60, "t={t}");
    assert_eq!(tag(&header, "l"), None, "no body length limit");
    assert_eq!(tag(&header, "x"), None, "no expiry");

    let ed = f
        .signers
        .sign(b"From: a@ed.example\r\nDate: Tue, 14 Apr 2026 10:00:00 +0000\r\n\r\nx\r\n")
        .unwrap()
        .unwrap();
    assert!(ed.starts_with("DKIM-Signature: v=1; a=ed25519-sha256; s=ed1; d=ed.example;"));
    assert_eq!(tag(&ed, "h").unwrap().to_ascii_lowercase(), "date:from");
}

/// The negative controls: without them a verifier that accepts everything would pass the
/// tests above.
#[tokio::test]
async fn tampering_fails_verification() {
    for (domain, selector, key) in [
        ("acme.example", "rsa1", rsa_key()),
        ("ed.example", "ed1", ed_key()),
    ] {
        let f = fixture(&[(domain, selector, key)]);
        let message = format!(
            "From: news@{domain}\r\nTo: alice@example.net\r\nSubject: Pay invoice 100\r\n\r\n\
             Please pay 100 EUR to account 1234.\r\n"
        );
        let header = f.signers.sign(message.as_bytes()).unwrap().unwrap();
        let signed = prepend(&header, message.as_bytes());
        dkimpy(&signed, &f.records).expect("untouched message verifies");

        let body = String::from_utf8(signed.clone())
            .unwrap()
            .replace("1234", "6666");
        let why = dkimpy(body.as_bytes(), &f.records).expect_err("tampered body must fail");
        assert!(why.contains("FAILED"), "{why}");
        let results = mail_auth_verify(body.as_bytes(), &f.records).await;
        // mail-auth classes a body-hash mismatch as Neutral(FailedBodyHashMatch): not a pass.
        assert!(
            matches!(results.as_slice(), [r] if *r != DkimResult::Pass),
            "{results:?}"
        );
        let results = mail_auth_verify(subject_tampered(&signed).as_bytes(), &f.records).await;
        assert!(
            matches!(results.as_slice(), [DkimResult::Fail(_)]),
            "{results:?}"
        );

        dkimpy(subject_tampered(&signed).as_bytes(), &f.records)
            .expect_err("tampered signed header must fail");

        // An unsigned header added in transit does not break the signature...
        let mut added = signed.clone();
        added.splice(
            0..0,
            b"Received: from relay.example by mx.example\r\n"
                .iter()
                .copied(),
        );
        dkimpy(&added, &f.records).expect("unsigned header added in transit");

        // ...and relaxed canonicalisation tolerates whitespace rewriting of signed fields.
        let rewrapped = String::from_utf8(signed.clone()).unwrap().replace(
            "Subject: Pay invoice 100",
            "subject:   Pay\r\n invoice  100",
        );
        dkimpy(rewrapped.as_bytes(), &f.records).expect("relaxed header canonicalisation");

        // The wrong public key fails too (the DNS answer is really used).
        let other = if std::ptr::eq(key, rsa_key()) {
            ed_key()
        } else {
            rsa_key()
        };
        let wrong = [record(selector, domain, other)];
        dkimpy(&signed, &wrong).expect_err("wrong public key must fail");
    }
}

fn subject_tampered(signed: &[u8]) -> String {
    String::from_utf8_lossy(signed).replace("invoice 100", "invoice 900")
}
