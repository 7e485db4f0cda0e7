//! Built messages: personalised per recipient, MIME that both mail-parser and Python's `email`
//! package parse without defects, the headers Keel owns, VERP and unsubscribe tokens that map
//! back, and DKIM signatures (keel-dkim) over the result that dkimpy verifies.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use keel_campaign::{
    BuildSettings, BuiltMessage, CampaignKey, CampaignRequest, MessageFactory, RequestLimits,
    TokenKey, Unsubscribe, Validated, Verp,
};
use mail_parser::{MessageParser, MimeHeaders};
use serde_json::{Value, json};

const SECRET: &[u8] = b"test secret, at least sixteen bytes";
const DATE: u64 = 1_795_856_400; // 2026-11-28T09:00:00Z

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

fn request(v: Value) -> Validated {
    CampaignRequest::from_json(v.to_string().as_bytes())
        .expect("parses")
        .validate(&RequestLimits::default())
        .unwrap_or_else(|e| panic!("invalid: {e}"))
}

fn settings() -> BuildSettings {
    let key = TokenKey::new(SECRET).expect("key");
    BuildSettings {
        hostname: "mta.keel.test".into(),
        verp: Some(Verp::new(key.clone(), "bounces.acme.example")),
        unsubscribe: Some(
            Unsubscribe::new(key, "https://t.acme.example", Some("bounces.acme.example"))
                .expect("url"),
        ),
    }
}

fn build_all(v: &Validated, settings: &BuildSettings) -> Vec<BuiltMessage> {
    let f = MessageFactory::new(&v.campaign, settings);
    let date = SystemTime::UNIX_EPOCH + Duration::from_secs(DATE);
    v.recipients
        .iter()
        .map(|r| f.build(r, date).unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

/// Runs tests/mime_check.py (Python's `email` package) over a message.
fn python_parse(bytes: &[u8]) -> Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("m.eml");
    std::fs::write(&file, bytes).expect("write");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mime_check.py");
    let out = Command::new(python())
        .arg(script)
        .arg(&file)
        .output()
        .expect("run python3 (set PYTHON to override)");
    assert!(
        out.status.success(),
        "mime_check.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from mime_check.py")
}

fn full_campaign() -> Value {
    json!({
        "campaign": "black-friday-2026",
        "tenant": "acme",
        "from": {"email": "news@acme.example", "name": "ACME Grüße"},
        "reply_to": "support@acme.example",
        "subject": "Hi {{ first_name }} — deals for {{ city }} ☕",
        "text": "Hello {{ first_name }},\n\nDeals in {{ city }}.\n{{ long }}\n",
        "html": "<html><body><p>Hello {{ first_name }}</p><p>{{ city }}</p><p>{{ long }}</p></body></html>\n",
        "headers": {"X-Campaign-Code": "bf26", "Precedence": "bulk"},
        "attachments": [
            {"name": "terms.txt", "content_type": "text/plain", "data": "VGVybXMgYW5kIGNvbmRpdGlvbnMu"},
            {"name": "logo.png", "content_type": "image/png", "data": "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="}
        ],
        "recipients": [
            {"email": "ann@x.example", "vars": {"first_name": "Ann", "city": "Köln", "long": "a".repeat(3000)}},
            {"email": "bo@y.example", "vars": {"first_name": "Bo <script>", "city": "Oslo", "long": "b ".repeat(2000)}},
            {"email": "cy@z.example", "vars": {"first_name": "Cy", "city": "Lyon", "long": "ünïcödé ".repeat(300)}}
        ]
    })
}

#[test]
fn each_recipient_gets_their_own_message() {
    let v = request(full_campaign());
    let built = build_all(&v, &settings());
    assert_eq!(built.len(), 3);
    let expect = [
        ("ann@x.example", "Ann", "Köln"),
        ("bo@y.example", "Bo <script>", "Oslo"),
        ("cy@z.example", "Cy", "Lyon"),
    ];
    for (m, (email, name, city)) in built.iter().zip(expect) {
        let parsed = MessageParser::new()
            .parse(&m.bytes)
            .expect("mail-parser parses it");
        assert_eq!(
            parsed.subject(),
            Some(format!("Hi {name} — deals for {city} ☕").as_str())
        );
        let to = parsed
            .to()
            .and_then(|a| a.first())
            .and_then(|a| a.address());
        assert_eq!(to, Some(email));
        // Templates are written with LF; on the wire every line ends in CRLF.
        let text = parsed
            .body_text(0)
            .expect("text part")
            .replace("\r\n", "\n");
        assert!(
            text.starts_with(&format!("Hello {name},\n\nDeals in {city}.\n")),
            "{text}"
        );
        let html = parsed.body_html(0).expect("html part");
        let escaped = name.replace('<', "&lt;").replace('>', "&gt;");
        assert!(html.contains(&format!("<p>Hello {escaped}</p>")), "{html}");
        assert!(!html.contains("<script>"));
        assert_eq!(parsed.attachment_count(), 2);
        assert_eq!(
            parsed.attachment(0).and_then(|a| a.attachment_name()),
            Some("terms.txt")
        );
        assert_eq!(
            parsed.attachment(0).map(|a| a.contents()),
            Some(&b"Terms and conditions."[..])
        );
        let from = parsed.from().and_then(|a| a.first()).expect("from");
        assert_eq!(from.name(), Some("ACME Grüße"));
        assert_eq!(from.address(), Some("news@acme.example"));
    }
    // Message-IDs are unique and carry Keel's host name.
    let mut ids: Vec<&str> = built.iter().map(|m| m.message_id.as_str()).collect();
    assert!(ids.iter().all(|id| id.ends_with("@mta.keel.test")));
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3);
}

#[test]
fn python_email_parses_every_shape_without_defects() {
    let mut shapes = Vec::new();
    let base = full_campaign();
    shapes.push(("text+html+attachments", base.clone()));
    let mut only = |remove: &[&str], name: &'static str| {
        let mut c = base.clone();
        for key in remove {
            c.as_object_mut().expect("object").remove(*key);
        }
        shapes.push((name, c));
    };
    only(&["attachments"], "text+html");
    only(&["html", "attachments"], "text only");
    only(&["text", "attachments"], "html only");
    only(&["text"], "html+attachments");
    for (shape, campaign) in shapes {
        let v = request(campaign);
        for (m, r) in build_all(&v, &settings()).iter().zip(&v.recipients) {
            let py = python_parse(&m.bytes);
            assert_eq!(py["defects"], json!([]), "{shape}: {py}");
            assert!(py["max_line"].as_u64().expect("max_line") <= 998, "{shape}");
            // Header fields may hold long unbreakable tokens (the unsubscribe URL); body lines
            // are encoded to at most 78 characters however long the template's lines are.
            assert!(
                py["max_body_line"].as_u64().expect("max_body_line") <= 78,
                "{shape}: {py}"
            );
            assert_eq!(py["bare_lf"], false, "{shape}");
            let first = r.vars["first_name"].as_str().expect("name");
            let city = r.vars["city"].as_str().expect("city");
            assert_eq!(
                py["subject"],
                format!("Hi {first} — deals for {city} ☕"),
                "{shape}"
            );
            assert_eq!(py["from"], "ACME Grüße <news@acme.example>");
            assert_eq!(py["to"], r.email);
            let tree = &py["tree"];
            let expected_type = match shape {
                "text+html+attachments" | "html+attachments" => "multipart/mixed",
                "text+html" => "multipart/alternative",
                "text only" => "text/plain",
                _ => "text/html",
            };
            assert_eq!(tree["type"], expected_type, "{shape}");
            if shape == "text+html+attachments" {
                assert_eq!(tree["parts"][0]["type"], "multipart/alternative");
                assert_eq!(tree["parts"][0]["parts"][0]["type"], "text/plain");
                assert_eq!(tree["parts"][0]["parts"][1]["type"], "text/html");
                assert_eq!(tree["parts"][1]["filename"], "terms.txt");
                assert_eq!(tree["parts"][2]["filename"], "logo.png");
                assert_eq!(tree["parts"][2]["size"], 70);
                let text = tree["parts"][0]["parts"][0]["text"].as_str().expect("text");
                let long = r.vars["long"].as_str().expect("long");
                assert!(
                    text.contains(long),
                    "{shape}: the long line survives encoding"
                );
            }
        }
    }
}

#[test]
fn keel_owned_headers_are_present_and_in_order() {
    let v = request(full_campaign());
    let m = &build_all(&v, &settings())[0];
    let py = python_parse(&m.bytes);
    let headers: Vec<&str> = py["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        headers,
        [
            "Date",
            "From",
            "Reply-To",
            "To",
            "Subject",
            "Message-ID",
            "List-Unsubscribe",
            "List-Unsubscribe-Post",
            "Precedence",
            "X-Campaign-Code",
            "MIME-Version",
            "Content-Type"
        ]
    );
    let text = String::from_utf8_lossy(&m.bytes);
    assert!(
        text.contains("Date: Sat, 28 Nov 2026 09:00:00 +0000\r\n"),
        "{text}"
    );
    assert!(text.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"));
    assert_eq!(py["reply_to"], "support@acme.example");

    // The unsubscribe URIs map back to this campaign and recipient.
    let parsed = MessageParser::new().parse(&m.bytes).expect("parse");
    let uris: Vec<String> = parsed
        .header_values("List-Unsubscribe")
        .flat_map(|h| h.as_address().into_iter().flat_map(|a| a.iter()))
        .filter_map(|a| a.address().map(str::to_string))
        .collect();
    let raw = text
        .split("List-Unsubscribe: ")
        .nth(1)
        .and_then(|s| s.split("\r\nList-Unsubscribe-Post").next())
        .expect("List-Unsubscribe header")
        .replace("\r\n ", " ");
    let (mailto, url) = raw
        .split_once(", ")
        .unwrap_or_else(|| panic!("two URIs: {raw} ({uris:?})"));
    let key = TokenKey::new(SECRET).expect("key");
    let u =
        Unsubscribe::new(key, "https://t.acme.example", Some("bounces.acme.example")).expect("url");
    let token = url
        .strip_prefix("<https://t.acme.example/u/")
        .and_then(|t| t.strip_suffix('>'))
        .expect("https URI");
    let target = u.decode_url_token(token).expect("valid token");
    assert_eq!(
        target.campaign,
        CampaignKey::derive(Some("acme"), "black-friday-2026")
    );
    assert_eq!(
        (target.recipient, target.email.as_str()),
        (0, "ann@x.example")
    );
    let address = mailto
        .strip_prefix("<mailto:")
        .and_then(|m| m.strip_suffix("?subject=unsubscribe>"))
        .expect("mailto URI");
    assert_eq!(
        u.decode_mailto(address).expect("valid"),
        (target.campaign, 0)
    );
}

#[test]
fn verp_return_paths_decode_to_campaign_and_recipient() {
    let v = request(full_campaign());
    let s = settings();
    let built = build_all(&v, &s);
    let verp = s.verp.as_ref().expect("verp");
    for (m, r) in built.iter().zip(&v.recipients) {
        assert!(m.return_path.starts_with("bounces+"));
        assert!(keel_smtp_like(&m.return_path));
        assert_eq!(
            verp.decode(&m.return_path).expect("decodes"),
            (v.campaign.key(), r.index)
        );
    }
    // Without a bounce domain the return path is the From address.
    let plain = BuildSettings {
        hostname: "h.example".into(),
        verp: None,
        unsubscribe: None,
    };
    let m = &build_all(&v, &plain)[0];
    assert_eq!(m.return_path, "news@acme.example");
    assert!(!String::from_utf8_lossy(&m.bytes).contains("List-Unsubscribe"));
}

/// Local part within 64 octets and only dot-atom characters: usable as `MAIL FROM`.
fn keel_smtp_like(address: &str) -> bool {
    let (local, _) = address.rsplit_once('@').expect("@");
    local.len() <= 64
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+')
}

fn dkim_verify_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/peers/dkim_verify.py")
}

#[test]
fn built_messages_signed_by_keel_dkim_verify_with_dkimpy() {
    use keel_dkim::{Algorithm, DkimKeyConfig, Signers, keygen};
    let dir = tempfile::tempdir().expect("tempdir");
    let rsa = keygen(Algorithm::Rsa2048, "acme.example", "rsa1").expect("rsa");
    let ed = keygen(Algorithm::Ed25519, "acme.example", "ed1").expect("ed25519");
    let mut configs = Vec::new();
    for (name, key) in [("rsa1", &rsa), ("ed1", &ed)] {
        let path = dir.path().join(format!("{name}.pem"));
        std::fs::write(&path, &key.pem).expect("write key");
        configs.push(DkimKeyConfig {
            domain: "acme.example".into(),
            selector: name.into(),
            key_path: path,
        });
    }
    let signers = Signers::load(&configs).expect("keys");
    let v = request(full_campaign());
    for (i, m) in build_all(&v, &settings()).into_iter().enumerate() {
        let header = signers
            .sign(&m.bytes)
            .expect("signs")
            .expect("a key for acme.example");
        let unfolded = header.replace("\r\n\t", "");
        let signed_names = unfolded
            .split("h=")
            .nth(1)
            .and_then(|h| h.split(';').next())
            .expect("h= tag");
        for name in keel_dkim::SIGNED_HEADERS {
            assert!(
                signed_names.split(':').any(|n| n == *name),
                "{name} not signed: {header}"
            );
        }
        let mut signed = header.into_bytes();
        signed.extend_from_slice(&m.bytes);
        let file = dir.path().join(format!("signed-{i}.eml"));
        std::fs::write(&file, &signed).expect("write");
        let out = Command::new(python())
            .arg(dkim_verify_script())
            .arg(&file)
            .arg(format!("{}={}", rsa.dns_name, rsa.dns_txt))
            .arg(format!("{}={}", ed.dns_name, ed.dns_txt))
            .output()
            .expect("run dkim_verify.py");
        assert_eq!(
            out.status.code(),
            Some(0),
            "dkimpy rejected message {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // A changed unsubscribe link breaks the signature (it is covered).
        let text = String::from_utf8_lossy(&signed).replacen("/u/", "/u/X", 1);
        std::fs::write(&file, text.as_bytes()).expect("write");
        let out = Command::new(python())
            .arg(dkim_verify_script())
            .arg(&file)
            .arg(format!("{}={}", rsa.dns_name, rsa.dns_txt))
            .arg(format!("{}={}", ed.dns_name, ed.dns_txt))
            .output()
            .expect("run dkim_verify.py");
        assert_eq!(out.status.code(), Some(1), "a tampered message verified");
    }
}
