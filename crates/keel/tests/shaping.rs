//! Traffic shaping, egress sources and operator control, through the real binary and real
//! peers (aiosmtpd sink counting concurrent connections, smtp-source, the `keel` CLI).

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn send(port: u16, rcpt: &str, subject: &str) {
    let (mut c, _) = SmtpClient::connect(port);
    c.cmd("EHLO c.test");
    assert!(c.cmd("MAIL FROM:<a@src.test>").starts_with("250"));
    assert!(c.cmd(&format!("RCPT TO:<{rcpt}>")).starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send_raw(format!("Subject: {subject}\r\n\r\nx\r\n.\r\n").as_bytes());
    let r = c.reply();
    assert!(r.starts_with("250"), "{r}");
}

#[test]
fn connection_cap_is_never_exceeded() {
    let dir = tempfile::tempdir().unwrap();
    let stats = dir.path().join("stats.json");
    let sink = PySink::start(
        dir.path(),
        &["--delay", "0.2", "--stats", stats.to_str().unwrap()],
    );
    let keel = Keel::start(&Conf {
        rest: format!(
            "[[route]]\ndomain = \"*\"\nsmarthost = \"127.0.0.1:{}\"\n\n\
             [[shaping.rule]]\ndomain = \"capped.test\"\nmax_connections = 2\nmax_messages_per_connection = 3\n",
            sink.port
        ),
        ..Conf::default()
    });
    let status = smtp_source(keel.smtp_port, 5, 20, 500, "r@capped.test");
    assert!(status.success());
    assert_eq!(sink.wait_count(20, Duration::from_secs(60)).len(), 20);
    let s: Value = serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    assert_eq!(s["max_connections"], 2, "{s}");
    // At most 3 messages per connection: at least 7 connections for 20 messages.
    let q = keel.events_of("Delivery");
    assert_eq!(q.len(), 20);
}

#[test]
fn message_rate_spaces_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let sink = PySink::start(dir.path(), &[]);
    let keel = Keel::start(&Conf {
        rest: format!(
            "[[route]]\ndomain = \"*\"\nsmarthost = \"127.0.0.1:{}\"\n\n\
             [shaping.default]\nmax_message_rate = \"5/s\"\n",
            sink.port
        ),
        ..Conf::default()
    });
    let status = smtp_source(keel.smtp_port, 2, 10, 500, "r@slow.test");
    assert!(status.success());
    let recs = sink.wait_count(10, Duration::from_secs(30));
    assert_eq!(recs.len(), 10);
    let mut times: Vec<f64> = recs.iter().map(|r| r["time"].as_f64().unwrap()).collect();
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let span = times[9] - times[0];
    // 10 messages at 5/s: 9 intervals of 0.2 s; a faster arrival would break the limit.
    assert!(span >= 1.7, "10 messages arrived within {span:.2}s at 5/s");
}

#[test]
fn egress_sources_bind_and_share_by_weight() {
    let dir = tempfile::tempdir().unwrap();
    let sink = PySink::start(dir.path(), &[]);
    let keel = Keel::start(&Conf {
        rest: format!(
            "[[route]]\ndomain = \"*\"\nsmarthost = \"127.0.0.1:{}\"\n\n\
             [[egress.source]]\nname = \"ip2\"\nbind = \"127.0.0.2\"\nehlo = \"mta2.keel.test\"\n\n\
             [[egress.source]]\nname = \"ip3\"\nbind = \"127.0.0.3\"\nehlo = \"mta3.keel.test\"\n\n\
             [[egress.pool]]\nname = \"default\"\nsources = [{{ name = \"ip2\", weight = 2 }}, {{ name = \"ip3\", weight = 1 }}]\n",
            sink.port
        ),
        ..Conf::default()
    });
    let status = smtp_source(keel.smtp_port, 3, 30, 500, "r@spread.test");
    assert!(status.success());
    let recs = sink.wait_count(30, Duration::from_secs(30));
    assert_eq!(recs.len(), 30, "stderr: {}", keel.stderr());
    let from = |ip: &str| recs.iter().filter(|r| r["peer"] == ip).count();
    assert_eq!(from("127.0.0.2"), 20);
    assert_eq!(from("127.0.0.3"), 10);
    let deliveries = keel.wait_events("Delivery", 30, Duration::from_secs(30));
    assert!(deliveries.iter().any(|e| e["source"] == "ip2"));
    assert!(deliveries.iter().any(|e| e["source"] == "ip3"));
}

#[test]
fn suspend_resume_and_queue_summary_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let sink = PySink::start(dir.path(), &[]);
    let keel = Keel::start(&Conf {
        rest: format!(
            "[[route]]\ndomain = \"*\"\nsmarthost = \"127.0.0.1:{}\"\n",
            sink.port
        ),
        ..Conf::default()
    });
    let (ok, out, err) = cli(
        &keel,
        &["suspend", "--domain", "held.test", "--reason", "testing"],
    );
    assert!(ok, "{out}{err}");
    send(keel.smtp_port, "u@held.test", "held");
    send(keel.smtp_port, "u@free.test", "free");
    assert_eq!(sink.wait_count(1, Duration::from_secs(30)).len(), 1);
    std::thread::sleep(Duration::from_millis(1000));
    let recs = sink.records();
    assert_eq!(recs.len(), 1, "the suspended domain got mail: {recs:?}");
    assert_eq!(recs[0]["rcpt_tos"][0], "u@free.test");

    let (ok, out, _) = cli(&keel, &["queue", "--json"]);
    assert!(ok);
    let q: Value = serde_json::from_str(&out).unwrap();
    let held = q["scheduled"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["domain"] == "held.test")
        .expect("held.test queue");
    assert_eq!(held["messages"], 1);
    assert_eq!(held["parked"], 1);
    assert_eq!(q["suspensions"][0]["domain"], "held.test");
    assert_eq!(q["suspensions"][0]["reason"], "testing");
    let (ok, table, _) = cli(&keel, &["queue"]);
    assert!(ok);
    assert!(
        table.contains("held.test") && table.contains("Suspensions"),
        "{table}"
    );

    let (ok, out, err) = cli(&keel, &["resume", "--domain", "held.test"]);
    assert!(ok, "{out}{err}");
    assert_eq!(sink.wait_count(2, Duration::from_secs(30)).len(), 2);
    // Resuming what is not suspended is a clear error.
    let (ok, _, err) = cli(&keel, &["resume", "--domain", "held.test"]);
    assert!(!ok);
    assert!(
        err.contains("404") && err.contains("no suspension matches"),
        "{err}"
    );
}

#[test]
fn suspension_with_duration_ends_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let sink = PySink::start(dir.path(), &[]);
    let keel = Keel::start(&Conf {
        rest: format!(
            "[[route]]\ndomain = \"*\"\nsmarthost = \"127.0.0.1:{}\"\n",
            sink.port
        ),
        ..Conf::default()
    });
    let (ok, out, err) = cli(
        &keel,
        &["suspend", "--domain", "later.test", "--duration", "2s"],
    );
    assert!(ok, "{out}{err}");
    send(keel.smtp_port, "u@later.test", "later");
    std::thread::sleep(Duration::from_millis(800));
    assert!(sink.records().is_empty());
    assert_eq!(sink.wait_count(1, Duration::from_secs(30)).len(), 1);
}

#[test]
fn admin_bounce_with_dry_run() {
    let port = free_port();
    let keel = Keel::start(&Conf {
        rest: format!(
            "[[route]]\ndomain = \"*\"\nsmarthost = \"127.0.0.1:{port}\"\n[retry]\nintervals = [\"1h\"]\nmax_age = \"3d\"\n"
        ),
        ..Conf::default()
    });
    for i in 0..3 {
        send(keel.smtp_port, &format!("u{i}@dead.test"), "dead");
    }
    send(keel.smtp_port, "u@other.test", "other");
    keel.wait_events("TransientFailure", 4, Duration::from_secs(30));
    let (ok, out, err) = cli(
        &keel,
        &["bounce", "--domain", "dead.test", "--dry-run", "--json"],
    );
    assert!(ok, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["messages"].as_u64(), v["recipients"].as_u64()),
        (Some(3), Some(3))
    );
    assert!(keel.events_of("AdminBounce").is_empty());
    let (ok, out, _) = cli(
        &keel,
        &["bounce", "--domain", "dead.test", "--reason", "gone"],
    );
    assert!(ok);
    assert!(out.contains("bounced 3 recipients in 3 messages"), "{out}");
    let bounced = keel.wait_events("AdminBounce", 3, Duration::from_secs(30));
    assert_eq!(bounced.len(), 3);
    assert!(
        bounced[0]["response"]["text"]
            .as_str()
            .unwrap()
            .contains("gone")
    );
    let (_, out, _) = cli(&keel, &["queue", "--json"]);
    let q: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(q["messages"], 1, "{q}");
    assert_eq!(q["scheduled"][0]["domain"], "other.test");
}

#[test]
fn admin_api_requires_a_token_when_configured() {
    let keel = Keel::start(&Conf {
        rest: String::new(),
        smtp: String::new(),
    });
    // No tokens configured: loopback clients are served.
    assert_eq!(keel.http_get("/api/v1/queues").0, 200);
    drop(keel);
    let mut keel = Keel::start(&Conf::default());
    keel.terminate(Duration::from_secs(10));
    let text = std::fs::read_to_string(&keel.config).unwrap().replace(
        "[http]\n",
        "[http]\napi_tokens = [\"0123456789abcdef0123\"]\n",
    );
    std::fs::write(&keel.config, text).unwrap();
    keel.launch();
    let (status, body) = keel.http_get("/api/v1/queues");
    assert_eq!(status, 401);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["field"], "authorization");
    // The CLI reads the token from the config file.
    let (ok, out, err) = cli(&keel, &["queue", "--json"]);
    assert!(ok, "{out}{err}");
    // A wrong token is refused.
    let out = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args([
            "queue",
            "--api",
            &format!("http://127.0.0.1:{}", keel.http_port),
        ])
        .args(["--token", "wrong-token-wrong-token"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    // Health stays open.
    assert_eq!(keel.http_get("/healthz").0, 200);
}

#[test]
fn reply_rule_suspends_then_delivery_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let sink = PySink::start(
        dir.path(),
        &["--throttle-after", "5", "--throttle-for", "1.5"],
    );
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[[rule]]\nname = \"test-rate\"\ncode = 421\nenhanced = \"4.7.28\"\naction = \"suspend\"\nduration = \"2s\"\n",
    )
    .unwrap();
    let keel = Keel::start(&Conf {
        rest: format!(
            "[[route]]\ndomain = \"*\"\nsmarthost = \"127.0.0.1:{}\"\n\n[retry]\nintervals = [\"1s\"]\nmax_age = \"1h\"\n\n\
             [shaping]\nreply_rules = \"{}\"\nadaptive = false\n\n[shaping.default]\nmax_connections = 1\n",
            sink.port,
            rules.display()
        ),
        ..Conf::default()
    });
    let status = smtp_source(keel.smtp_port, 1, 12, 300, "r@ruled.test");
    assert!(status.success());
    let actions = keel.wait_events("ShapingAction", 1, Duration::from_secs(30));
    assert!(
        !actions.is_empty(),
        "no shaping action; stderr: {}",
        keel.stderr()
    );
    let a = &actions[0];
    assert!(
        a["action"]
            .as_str()
            .unwrap()
            .contains("suspend for 2s (reply rule test-rate)"),
        "{a}"
    );
    assert_eq!(a["response"]["enhanced"], "4.7.28");
    assert_eq!(a["source"], "default");
    // While suspended the queue summary shows it.
    let (ok, out, _) = cli(&keel, &["queue", "--json"]);
    assert!(ok);
    let q: Value = serde_json::from_str(&out).unwrap();
    let sus = q["suspensions"].as_array().unwrap();
    assert!(
        sus.is_empty() || sus[0]["reason"].as_str().unwrap().contains("test-rate"),
        "{q}"
    );
    // Everything is delivered once the suspension ends.
    assert_eq!(sink.wait_count(12, Duration::from_secs(40)).len(), 12);
    assert_eq!(
        keel.wait_events("Delivery", 12, Duration::from_secs(30))
            .len(),
        12
    );
}

#[test]
fn adaptive_shaping_cuts_connections_on_refusals_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let stats = dir.path().join("stats.json");
    let sink = PySink::start(
        dir.path(),
        &[
            "--delay",
            "0.05",
            "--max-concurrent",
            "3",
            "--stats",
            stats.to_str().unwrap(),
        ],
    );
    let rules = dir.path().join("none.toml");
    std::fs::write(&rules, "# no rules\n").unwrap();
    let keel = Keel::start(&Conf {
        rest: format!(
            "[[route]]\ndomain = \"*\"\nsmarthost = \"127.0.0.1:{}\"\n\n[retry]\nintervals = [\"1s\"]\nmax_age = \"1h\"\n\n\
             [shaping]\nreply_rules = \"{}\"\n\n[shaping.default]\nmax_connections = 16\nmax_messages_per_connection = 1000\n",
            sink.port,
            rules.display()
        ),
        ..Conf::default()
    });
    let status = smtp_source(keel.smtp_port, 8, 200, 300, "r@busy.test");
    assert!(status.success());
    assert_eq!(sink.wait_count(200, Duration::from_secs(90)).len(), 200);
    let actions = keel.events_of("ShapingAction");
    let cut = actions
        .iter()
        .find(|a| a["action"].as_str().unwrap().contains("cut connections"))
        .unwrap_or_else(|| panic!("no adaptive cut in {actions:?}"));
    assert_eq!(cut["queue"], "busy.test");
    assert!(
        cut["response"]["text"]
            .as_str()
            .unwrap()
            .contains("Too many connections")
    );
    let raised = actions
        .iter()
        .any(|a| a["action"].as_str().unwrap().contains("raise connections"));
    assert!(raised, "no recovery step in {actions:?}");
}

#[test]
fn full_ready_queue_holds_jobs_in_the_scheduled_queue() {
    let dir = tempfile::tempdir().unwrap();
    let sink = PySink::start(dir.path(), &["--delay", "0.1"]);
    let keel = Keel::start(&Conf {
        rest: format!(
            "[[route]]\ndomain = \"*\"\nsmarthost = \"127.0.0.1:{}\"\n\n[shaping]\nmax_ready = 2\n\n\
             [shaping.default]\nmax_connections = 1\n",
            sink.port
        ),
        ..Conf::default()
    });
    let status = smtp_source(keel.smtp_port, 4, 12, 300, "r@full.test");
    assert!(status.success());
    assert_eq!(sink.wait_count(12, Duration::from_secs(30)).len(), 12);
    let delayed = keel.events_of("Delayed");
    assert!(!delayed.is_empty(), "no Delayed event");
    assert!(delayed[0]["action"].as_str().unwrap().contains("is full"));
    assert_eq!(
        keel.wait_events("Delivery", 12, Duration::from_secs(30))
            .len(),
        12
    );
}

#[test]
fn warmup_cap_overflows_to_the_other_source() {
    let dir = tempfile::tempdir().unwrap();
    let sink = PySink::start(dir.path(), &[]);
    let keel = Keel::start(&Conf {
        rest: format!(
            "[[route]]\ndomain = \"*\"\nsmarthost = \"127.0.0.1:{}\"\n\n\
             [[egress.source]]\nname = \"new\"\nbind = \"127.0.0.2\"\nwarmup = [\"3/day\", \"10/day\"]\n\n\
             [[egress.source]]\nname = \"old\"\nbind = \"127.0.0.3\"\n\n\
             [[egress.pool]]\nname = \"default\"\nsources = [{{ name = \"new\", weight = 10 }}, {{ name = \"old\", weight = 1 }}]\n",
            sink.port
        ),
        ..Conf::default()
    });
    let status = smtp_source(keel.smtp_port, 2, 12, 300, "r@warm.test");
    assert!(status.success());
    let recs = sink.wait_count(12, Duration::from_secs(30));
    assert_eq!(recs.len(), 12);
    let from = |ip: &str| recs.iter().filter(|r| r["peer"] == ip).count();
    // The new address takes its weight's share only up to today's cap of 3.
    assert_eq!(from("127.0.0.2"), 3);
    assert_eq!(from("127.0.0.3"), 9);
    // The schedule is kept beside the spool and survives a restart.
    let state = std::fs::read_to_string(keel.dir.join("egress-warmup.json")).ok();
    let mut keel = keel;
    keel.terminate(Duration::from_secs(15));
    let state = state.or_else(|| std::fs::read_to_string(keel.dir.join("egress-warmup.json")).ok());
    let v: Value = serde_json::from_str(&state.expect("warm-up state file")).unwrap();
    assert_eq!(v["new"]["count"], 3);
}

#[test]
fn ready_queue_byte_bound_holds_large_backlogs() {
    let dir = tempfile::tempdir().unwrap();
    let sink = PySink::start(dir.path(), &["--delay", "0.1"]);
    let keel = Keel::start(&Conf {
        rest: format!(
            "[[route]]\ndomain = \"*\"\nsmarthost = \"127.0.0.1:{}\"\n\n[shaping]\nmax_ready_bytes = \"3KB\"\n\n\
             [shaping.default]\nmax_connections = 1\n",
            sink.port
        ),
        ..Conf::default()
    });
    // Each message is ~1.2 KB with its headers: at most two fit in the ready queue at once.
    let status = smtp_source(keel.smtp_port, 4, 10, 1000, "r@bytes.test");
    assert!(status.success());
    assert_eq!(sink.wait_count(10, Duration::from_secs(30)).len(), 10);
    let delayed = keel.events_of("Delayed");
    assert!(!delayed.is_empty(), "no Delayed event");
    assert!(delayed[0]["action"].as_str().unwrap().contains("bytes"));
}

#[test]
fn a_big_campaign_does_not_hold_back_other_mail_to_the_same_site() {
    let dir = tempfile::tempdir().unwrap();
    let sink = PySink::start(dir.path(), &["--delay", "0.05"]);
    let keel = Keel::start(&Conf {
        rest: format!(
            "[[route]]\ndomain = \"*\"\nsmarthost = \"127.0.0.1:{}\"\n\n[shaping.default]\nmax_connections = 1\n",
            sink.port
        ),
        ..Conf::default()
    });
    let (mut c, _) = SmtpClient::connect(keel.smtp_port);
    c.cmd("EHLO c.test");
    for i in 0..80 {
        assert!(c.cmd("MAIL FROM:<news@src.test>").starts_with("250"));
        assert!(
            c.cmd(&format!("RCPT TO:<r{i}@same.test>"))
                .starts_with("250")
        );
        assert!(c.cmd("DATA").starts_with("354"));
        c.send_raw(
            format!("X-Keel-Campaign: big\r\nSubject: campaign {i}\r\n\r\nx\r\n.\r\n").as_bytes(),
        );
        assert!(c.reply().starts_with("250"));
    }
    send(keel.smtp_port, "vip@same.test", "transactional");
    let recs = sink.wait_count(81, Duration::from_secs(60));
    assert_eq!(recs.len(), 81);
    let pos = recs
        .iter()
        .position(|r| r["subject"] == "transactional")
        .unwrap();
    // Queued behind 80 campaign messages on one connection, it still goes out within a few.
    let delivered_before = keel
        .events_of("Delivery")
        .iter()
        .position(|e| e["recipient"] == "vip@same.test")
        .unwrap();
    // Without fairness it would be the 81st; round-robin between classes sends it next.
    assert!(
        pos < 20,
        "transactional message was delivered {pos}th of 81"
    );
    assert!(delivered_before < 20);
}
