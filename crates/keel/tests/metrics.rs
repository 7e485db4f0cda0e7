//! `GET /metrics` against a known workload through the real binary and real peers: the counters
//! must equal the workload exactly, and the scrape-time gauges must show what is still queued.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;

/// Parses Prometheus/OpenMetrics text into `series -> value` (series with its label set as
/// written, e.g. `keel_deliveries_total{result="delivered"}`).
fn parse(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("malformed line {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        assert!(
            out.insert(series.to_string(), value).is_none(),
            "duplicate series {series}"
        );
    }
    out
}

/// The sum of every series of metric `name` whose labels contain all of `labels`.
fn sum(m: &HashMap<String, f64>, name: &str, labels: &[&str]) -> f64 {
    m.iter()
        .filter(|(k, _)| {
            let (n, l) = k.split_once('{').unwrap_or((k.as_str(), ""));
            n == name && labels.iter().all(|want| l.contains(want))
        })
        .map(|(_, v)| v)
        .sum()
}

/// Every metric the Grafana dashboard (`contrib/grafana/keel.json`) queries is exported (or,
/// for a labelled family without series yet, registered).
#[test]
fn grafana_dashboard_uses_exported_metrics() {
    let keel = Keel::start(&Conf::default());
    let (status, body) = keel.http_get("/metrics");
    assert_eq!(status, 200);
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../contrib/grafana/keel.json"
    );
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut names = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(i) = rest.find("keel_") {
                let name: String = rest[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[i + name.len()..];
                names.push(name);
            }
        }
    }
    assert!(names.len() > 10, "{names:?}");
    let source =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/metrics.rs")).unwrap();
    for n in names {
        let base = n
            .strip_suffix("_total")
            .or_else(|| n.strip_suffix("_bucket"))
            .unwrap_or(&n);
        // A labelled family with no series yet is not in the text: look for its registration.
        assert!(
            body.contains(&format!("# TYPE {base} ")) || source.contains(&format!("\"{base}\"")),
            "{n} is not exported:\n{body}"
        );
    }
}

fn scrape(keel: &Keel) -> HashMap<String, f64> {
    let (status, body) = keel.http_get("/metrics");
    assert_eq!(status, 200, "{body}");
    assert!(body.ends_with("# EOF\n"), "{body}");
    parse(&body)
}

#[test]
fn counters_match_a_known_workload() {
    let dir = tempfile::tempdir().unwrap();
    // One sink for everything: 550 for "unknown", 450 for "later", 250 otherwise.
    let sink = PySink::start(
        dir.path(),
        &["--reject-rcpt", "unknown", "--tempfail-rcpt", "later"],
    );
    let keel = Keel::start(&Conf {
        rest: format!(
            "[[route]]\ndomain = \"*\"\nsmarthost = \"127.0.0.1:{}\"\n\n\
             [retry]\nintervals = [\"1h\"]\nmax_age = \"1d\"\n",
            sink.port
        ),
        ..Conf::default()
    });

    // Before any mail: the families with fixed labels are there, at zero.
    let m = scrape(&keel);
    assert_eq!(m["keel_messages_received_total"], 0.0);
    assert_eq!(m["keel_queued_messages"], 0.0);
    assert!(m["keel_spool_free_bytes"] > 0.0, "free disk is measured");

    assert!(smtp_source(keel.smtp_port, 5, 50, 1000, "r@ok.test").success());
    assert!(smtp_source(keel.smtp_port, 2, 5, 500, "unknown@bad.test").success());
    assert!(smtp_source(keel.smtp_port, 1, 3, 500, "later@slow.test").success());

    assert_eq!(sink.wait_count(50, Duration::from_secs(60)).len(), 50);
    assert_eq!(
        keel.wait_events("Delivery", 50, Duration::from_secs(30))
            .len(),
        50
    );
    assert_eq!(
        keel.wait_events("Bounce", 5, Duration::from_secs(30)).len(),
        5
    );
    assert_eq!(
        keel.wait_events("TransientFailure", 3, Duration::from_secs(30))
            .len(),
        3
    );
    // The deferred messages are written back to the spool after their outcome; wait for the
    // queue to settle at exactly them.
    let mut m = HashMap::new();
    assert!(
        wait_until(Duration::from_secs(20), || {
            m = scrape(&keel);
            m.get("keel_spool_live_messages") == Some(&3.0)
        }),
        "spool never settled at 3 live messages: {m:?}"
    );

    // Counters: exactly the workload.
    assert_eq!(m["keel_messages_received_total"], 58.0);
    assert_eq!(sum(&m, "keel_events_total", &["type=\"Reception\""]), 58.0);
    assert_eq!(sum(&m, "keel_events_total", &["type=\"Delivery\""]), 50.0);
    assert_eq!(sum(&m, "keel_events_total", &["type=\"Bounce\""]), 5.0);
    assert_eq!(
        sum(&m, "keel_events_total", &["type=\"TransientFailure\""]),
        3.0
    );
    let result = |r: &str| sum(&m, "keel_deliveries_total", &[&format!("result=\"{r}\"")]);
    assert_eq!(result("delivered"), 50.0);
    assert_eq!(result("bounced"), 5.0);
    assert_eq!(result("deferred"), 3.0);
    assert_eq!(result("expired"), 0.0);
    // Every event's source label is an egress source name (Reception has none).
    assert!(
        m.keys()
            .filter(|k| k.starts_with("keel_events_total{type=\"Delivery\""))
            .all(|k| !k.contains("source=\"\"")),
        "{m:?}"
    );

    // Latency histogram: one observation per delivered recipient, each well under a minute.
    assert_eq!(m["keel_delivery_latency_seconds_count"], 50.0);
    assert!(m["keel_delivery_latency_seconds_sum"] > 0.0);
    assert!(m["keel_delivery_latency_seconds_sum"] < 50.0 * 60.0);
    assert_eq!(
        sum(&m, "keel_delivery_latency_seconds_bucket", &["le=\"+Inf\""]),
        50.0
    );

    // Gauges: the three deferred messages wait in one scheduled queue.
    assert_eq!(m["keel_queued_messages"], 3.0);
    assert_eq!(m["keel_queued_recipients"], 3.0);
    assert_eq!(m["keel_scheduled_queues"], 1.0);
    assert_eq!(m["keel_queue_messages{queue=\"slow.test\"}"], 3.0);
    assert_eq!(m["keel_queue_recipients{queue=\"slow.test\"}"], 3.0);
    assert!(m.contains_key("keel_queue_oldest_age_seconds{queue=\"slow.test\"}"));
    assert!(
        !m.keys().any(|k| k.contains("queue=\"ok.test\"")),
        "an emptied queue has no series"
    );
    assert!(m["keel_queued_bytes"] > 0.0);

    // Spool: group commits happened, fewer than one per message is fine, none is not.
    assert!(m["keel_spool_syncs_total"] >= 1.0);
    assert!(m["keel_spool_segments"] >= 1.0);
    assert!(m["keel_spool_disk_bytes"] >= m["keel_spool_live_bytes"]);
    assert!(m["keel_spool_live_bytes"] > 0.0);
    // Every accepted message went through a group commit; the fsync histogram is complete.
    assert_eq!(m["keel_spool_group_commit_appends_total"], 58.0);
    let syncs = m["keel_spool_sync_seconds_count"];
    assert!(syncs >= 1.0 && syncs <= m["keel_spool_syncs_total"]);
    assert_eq!(m["keel_spool_sync_seconds_bucket{le=\"+Inf\"}"], syncs);
    assert!(m["keel_spool_sync_seconds_sum"] > 0.0);

    // Inbound connections: smtp-source has finished, the limit is the configured one.
    assert_eq!(m["keel_smtp_connections"], 0.0);
    assert!(m.contains_key("keel_smtp_outbound_connections"));
    assert!(m["keel_smtp_max_connections"] >= 1.0);
}
