//! `POST /api/v1/messages` through the real binary: raw and built messages are queued durably
//! and delivered to a real receiving MTA; bad requests get 4xx JSON naming the field.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

fn keel_to(sink: &PySink, extra_http: &str) -> Keel {
    let keel = Keel::start(&Conf {
        rest: format!(
            "[[route]]\ndomain = \"*\"\nsmarthost = \"127.0.0.1:{}\"\n",
            sink.port
        ),
        ..Conf::default()
    });
    if extra_http.is_empty() {
        return keel;
    }
    let mut keel = keel;
    keel.terminate(Duration::from_secs(10));
    let text = std::fs::read_to_string(&keel.config)
        .unwrap()
        .replace("[http]\n", &format!("[http]\n{extra_http}\n"));
    std::fs::write(&keel.config, text).unwrap();
    keel.launch();
    keel
}

fn post(keel: &Keel, body: &Value) -> (u16, Value) {
    assert!(wait_until(Duration::from_secs(10), || keel
        .http_get("/healthz")
        .0
        == 200));
    let (status, text) = http_post(keel.http_port, "/api/v1/messages", &body.to_string(), None);
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[test]
fn raw_message_is_queued_and_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let sink = PySink::start(dir.path(), &["--keep-body"]);
    let keel = keel_to(&sink, "");
    let (status, v) = post(
        &keel,
        &json!({
            "mail_from": "app@src.test",
            "rcpt_to": ["user@dest.test"],
            "raw": "From: app@src.test\nTo: user@dest.test\nSubject: reset\nMessage-ID: <raw-1@src.test>\nX-Keel-Tenant: acme\n\nYour code is 1234.\n"
        }),
    );
    assert_eq!(status, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let recs = sink.wait_count(1, Duration::from_secs(30));
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["message_id"], "<raw-1@src.test>");
    assert_eq!(recs[0]["mail_from"], "app@src.test");
    let body = recs[0]["body"].as_str().unwrap();
    assert!(body.contains(&format!("with HTTP id {id}")), "{body}");
    assert!(
        body.contains("\r\nSubject: reset\r\n"),
        "line ends are CRLF: {body:?}"
    );
    assert!(
        !body.contains("X-Keel-Tenant"),
        "control header delivered: {body}"
    );
    let rec = keel.wait_events("Reception", 1, Duration::from_secs(30));
    assert_eq!(rec[0]["id"], id);
    assert_eq!(
        keel.wait_events("Delivery", 1, Duration::from_secs(30))
            .len(),
        1
    );
}

#[test]
fn built_message_is_personalised_and_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let sink = PySink::start(dir.path(), &["--keep-body"]);
    let keel = keel_to(&sink, "");
    let (status, v) = post(
        &keel,
        &json!({
            "from": {"email": "shop@src.test", "name": "The Shop"},
            "subject": "Order {{ order }} shipped",
            "text": "Hello {{ name }}, order {{ order }} is on its way.",
            "html": "<p>Hello {{ name }}</p>",
            "recipients": [{"email": "ann@dest.test", "vars": {"name": "Ann <3", "order": "A-17"}}]
        }),
    );
    assert_eq!(status, 201, "{v}");
    let recs = sink.wait_count(1, Duration::from_secs(30));
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["subject"], "Order A-17 shipped");
    assert_eq!(recs[0]["rcpt_tos"][0], "ann@dest.test");
    let mid = v["message_id"].as_str().unwrap();
    assert_eq!(recs[0]["message_id"], format!("<{mid}>"));
    let body = recs[0]["body"].as_str().unwrap();
    assert!(body.contains("multipart/alternative"), "{body}");
    // HTML escaping applies to the HTML part only.
    assert!(body.contains("Ann &lt;3"), "{body}");
}

#[test]
fn bad_requests_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let sink = PySink::start(dir.path(), &[]);
    let keel = keel_to(&sink, "");
    let cases = [
        (
            json!({"mail_from": "a@src.test", "rcpt_to": ["not-an-address"], "raw": "Subject: x\r\n\r\nx"}),
            "rcpt_to",
        ),
        (
            json!({"mail_from": "a@src.test", "rcpt_to": [], "raw": "Subject: x\r\n\r\nx"}),
            "rcpt_to",
        ),
        (
            json!({"mail_from": "a@src.test", "rcpt_to": ["b@dest.test"], "raw": "no header section"}),
            "raw",
        ),
        (
            json!({"mail_from": "a@src.test", "rcpt_to": ["b@dest.test"], "raw": "S: x\r\n\r\nx", "extra": 1}),
            "body",
        ),
        (
            json!({"from": {"email": "a@src.test"}, "subject": "hi", "text": "x",
                "headers": {"X-Evil": "a\r\nBcc: victim@x.test"},
                "recipients": [{"email": "b@dest.test"}]}),
            "headers.X-Evil",
        ),
        (
            json!({"from": {"email": "a@src.test"}, "subject": "hi", "text": "x",
                "recipients": [{"email": "b@dest.test"}, {"email": "c@dest.test"}]}),
            "recipients",
        ),
        (
            json!({"from": {"email": "a@src.test"}, "subject": "Hi {{ first_name }}", "text": "x",
                "recipients": [{"email": "b@dest.test", "vars": {}}]}),
            "template",
        ),
    ];
    for (body, field) in cases {
        let (status, v) = post(&keel, &body);
        assert_eq!(status, 400, "{body} → {v}");
        assert_eq!(v["field"], field, "{body} → {v}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        keel.events_of("Reception").is_empty(),
        "a bad request was queued"
    );
    assert!(sink.records().is_empty());
}

#[test]
fn the_api_needs_a_token_when_tokens_are_configured() {
    let dir = tempfile::tempdir().unwrap();
    let sink = PySink::start(dir.path(), &[]);
    let keel = keel_to(&sink, "api_tokens = [\"0123456789abcdef-token\"]");
    let body = json!({"mail_from": "a@src.test", "rcpt_to": ["b@dest.test"], "raw": "Subject: x\r\n\r\nx\r\n"});
    assert!(wait_until(Duration::from_secs(10), || keel
        .http_get("/healthz")
        .0
        == 200));
    let (status, _) = http_post(keel.http_port, "/api/v1/messages", &body.to_string(), None);
    assert_eq!(status, 401);
    let (status, text) = http_post(
        keel.http_port,
        "/api/v1/messages",
        &body.to_string(),
        Some("0123456789abcdef-token"),
    );
    assert_eq!(status, 201, "{text}");
    assert_eq!(sink.wait_count(1, Duration::from_secs(30)).len(), 1);
}
