//! `keel logs`: read, filter and follow the event log, for "what happened to this mail?".
//!
//! It reads the log directory itself (no daemon needed, so it works on a stopped node and on
//! copied logs): every rotated segment oldest first, compressed or not, then the live file;
//! `--follow` keeps going across rotations. The directory comes from `--dir`, else the
//! `[log] dir` of `--config FILE`, else the built-in default (`keel-data/log`, relative to
//! the working directory, as for the daemon).
//!
//! Filters compare one JSON field (a dotted path reaches into objects: `response.code`) with
//! a value, ignoring ASCII case: different fields must all match, and the same field given
//! twice matches either value, so `--filter type=Bounce --filter type=Expiration --filter
//! queue=example.com` means "bounces or expirations for example.com".

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::Args;
use serde_json::Value;

use crate::events::{self, tail};

/// `keel logs` arguments.
#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Read the log directory (`[log] dir`) from this configuration file.
    #[arg(long, short, conflicts_with = "dir")]
    pub config: Option<PathBuf>,
    /// The event log directory.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// After printing what is there, keep printing new events as they are logged, across
    /// rotations (like `tail -F`).
    #[arg(long, short)]
    pub follow: bool,
    /// Only events whose FIELD equals VALUE, ignoring case: `recipient=a@example.com`,
    /// `type=Bounce`, `response.code=421`. Repeatable: different fields must all match; one
    /// field given twice matches either value.
    #[arg(long = "filter", value_name = "FIELD=VALUE")]
    pub filters: Vec<String>,
    /// Only events at or after this time: RFC 3339 (`2026-11-18T11:00:00Z`), a UTC date
    /// (`2026-11-18`), or a duration ago (`2h`, `30m`, `1d`).
    #[arg(long)]
    pub since: Option<String>,
    /// Print the raw JSON lines instead of one readable line per event.
    #[arg(long)]
    pub json: bool,
}

/// `keel logs`.
pub fn main(args: LogsArgs) -> ExitCode {
    let dir = match log_dir(&args) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("keel: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = match Filter::parse(&args.filters) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("keel: {e}");
            return ExitCode::from(2);
        }
    };
    let since = match args
        .since
        .as_deref()
        .map(|s| parse_since(s, SystemTime::now()))
    {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => {
            eprintln!("keel: {e}");
            return ExitCode::from(2);
        }
    };
    if !dir.is_dir() {
        eprintln!(
            "keel: no event log directory at {} (give --dir, or --config with a [log] dir)",
            dir.display()
        );
        return ExitCode::FAILURE;
    }
    let stdout = io::stdout();
    let mut printer = Printer {
        out: io::BufWriter::with_capacity(64 * 1024, stdout.lock()),
        filter,
        since: since.map(events::rfc3339),
        json: args.json,
        skipped: 0,
    };
    let opts = tail::Options {
        since,
        follow: args.follow,
        ..tail::Options::default()
    };
    let result = tail::read(&dir, &opts, &mut printer).and_then(|()| printer.out.flush());
    if printer.skipped > 0 {
        eprintln!(
            "keel: skipped {} line(s) that are not JSON events",
            printer.skipped
        );
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `keel logs | head`: the reader has seen enough.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keel: reading the event log in {}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}

fn log_dir(args: &LogsArgs) -> Result<PathBuf, String> {
    if let Some(dir) = &args.dir {
        return Ok(dir.clone());
    }
    match &args.config {
        Some(path) => keel_config::Config::load(path)
            .map(|c| c.log.dir)
            .map_err(|e| e.to_string()),
        None => Ok(keel_config::LogConfig::default().dir),
    }
}

/// `--since`: an absolute time, a UTC date, or a duration before `now`.
fn parse_since(text: &str, now: SystemTime) -> Result<SystemTime, String> {
    let t = text.trim();
    let is_date = t.len() == 10 && t.as_bytes().get(4) == Some(&b'-');
    let absolute = if is_date {
        humantime::parse_rfc3339_weak(&format!("{t}T00:00:00Z")).ok()
    } else {
        humantime::parse_rfc3339_weak(t).ok()
    };
    if let Some(time) = absolute {
        return Ok(time);
    }
    match keel_config::units::parse_duration(t) {
        Ok(ago) => Ok(now.checked_sub(ago).unwrap_or(SystemTime::UNIX_EPOCH)),
        Err(_) => Err(format!(
            "invalid --since {text:?}: expected a time (2026-11-18T11:00:00Z), a date \
             (2026-11-18) or a duration ago (2h, 30m)"
        )),
    }
}

/// `--filter`s grouped by field: all fields must match, any value of a field.
#[derive(Debug, Default)]
struct Filter {
    fields: BTreeMap<String, Vec<String>>,
}

impl Filter {
    fn parse(specs: &[String]) -> Result<Filter, String> {
        let mut filter = Filter::default();
        for spec in specs {
            let (key, value) = spec
                .split_once('=')
                .filter(|(k, _)| !k.trim().is_empty())
                .ok_or_else(|| {
                    format!("invalid --filter {spec:?}: expected FIELD=VALUE, e.g. recipient=a@example.com")
                })?;
            filter
                .fields
                .entry(key.trim().to_owned())
                .or_default()
                .push(value.to_owned());
        }
        Ok(filter)
    }

    fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    fn matches(&self, event: &Value) -> bool {
        self.fields.iter().all(|(path, values)| {
            let found = path.split('.').try_fold(event, |v, key| v.get(key));
            found.is_some_and(|found| values.iter().any(|want| equals(found, want)))
        })
    }
}

/// A JSON value against the text an operator typed.
fn equals(found: &Value, want: &str) -> bool {
    match found {
        Value::String(s) => s.eq_ignore_ascii_case(want),
        Value::Number(n) => n.to_string() == want,
        Value::Bool(b) => want.eq_ignore_ascii_case(if *b { "true" } else { "false" }),
        Value::Null => want.is_empty() || want.eq_ignore_ascii_case("null"),
        Value::Array(_) | Value::Object(_) => false,
    }
}

struct Printer<W: Write> {
    out: W,
    filter: Filter,
    /// `--since` in the events' own time format, which sorts as text.
    since: Option<String>,
    json: bool,
    skipped: u64,
}

impl<W: Write> tail::Sink for Printer<W> {
    fn line(&mut self, line: &[u8]) -> io::Result<()> {
        if line.is_empty() {
            return Ok(());
        }
        let needs_parse = !self.json || !self.filter.is_empty() || self.since.is_some();
        if !needs_parse {
            self.out.write_all(line)?;
            return self.out.write_all(b"\n");
        }
        let Ok(event) = serde_json::from_slice::<Value>(line) else {
            self.skipped += 1;
            return Ok(());
        };
        if let Some(since) = &self.since
            && event["time"].as_str().is_none_or(|t| t < since.as_str())
        {
            return Ok(());
        }
        if !self.filter.matches(&event) {
            return Ok(());
        }
        if self.json {
            self.out.write_all(line)?;
        } else {
            self.out.write_all(human(&event).as_bytes())?;
        }
        self.out.write_all(b"\n")
    }

    fn unreadable(&mut self, path: &Path, error: &io::Error) {
        let _ = self.out.flush();
        eprintln!("keel: cannot read {}: {error}", path.display());
    }

    fn idle(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// The fields the compact format shows in its own way; any other field is shown as
/// `key=value` at the end, so new fields are never hidden.
const SHOWN: &[&str] = &[
    "type",
    "time",
    "id",
    "sender",
    "recipient",
    "size",
    "queue",
    "site",
    "source",
    "attempt",
    "response",
    "peer",
    "queue_time_ms",
];

/// One event as one readable line:
/// `2026-11-18T11:06:40.123Z Delivery 0193… a@src.example -> b@dest.example queue=dest.example
/// site=mx.dest.example attempt=1 [192.0.2.7:25] 250 2.0.0 "Ok" after 1.2s`.
fn human(e: &Value) -> String {
    let text = |key: &str| match &e[key] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let mut out = format!(
        "{} {:<16} {} {} -> {}",
        text("time"),
        text("type"),
        text("id"),
        match text("sender") {
            s if s.is_empty() => "<>".to_owned(),
            s => s,
        },
        text("recipient"),
    );
    let mut field = |label: &str, value: String| {
        if !value.is_empty() && value != "0" {
            out.push_str(&format!(" {label}={value}"));
        }
    };
    if e["type"] == "Reception" {
        field("size", text("size"));
        field("client", text("peer"));
    } else {
        field("queue", text("queue"));
        field("site", text("site"));
        field("source", text("source"));
        field("attempt", text("attempt"));
        field("peer", text("peer"));
    }
    if let Some(obj) = e.as_object() {
        for (key, value) in obj {
            if SHOWN.contains(&key.as_str()) || value.is_null() {
                continue;
            }
            let v = match value {
                Value::String(s) => format!("{s:?}"),
                other => other.to_string(),
            };
            out.push_str(&format!(" {key}={v}"));
        }
    }
    let r = &e["response"];
    if r.is_object() {
        // Code 0: no reply at all (connection or DNS trouble), only our enhanced code.
        for part in [&r["code"], &r["enhanced"]] {
            match part {
                Value::Number(n) if n.as_u64() == Some(0) => {}
                Value::String(s) if s.is_empty() => {}
                Value::Null => {}
                Value::String(s) => out.push_str(&format!(" {s}")),
                other => out.push_str(&format!(" {other}")),
            }
        }
        out.push_str(&format!(" {:?}", r["text"].as_str().unwrap_or("")));
    }
    if e["type"] != "Reception"
        && let Some(ms) = e["queue_time_ms"].as_u64()
    {
        out.push_str(&format!(" after {}", short_duration(ms)));
    }
    out
}

/// `850ms`, `12.3s`, `5m`, `3h`, `2d`: how long a message has been queued.
fn short_duration(ms: u64) -> String {
    let d = Duration::from_millis(ms);
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", d.as_secs_f64()),
        60_000..7_200_000 => format!("{}m", ms / 60_000),
        7_200_000..172_800_000 => format!("{}h", ms / 3_600_000),
        _ => format!("{}d", ms / 86_400_000),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn filter(specs: &[&str]) -> Filter {
        Filter::parse(&specs.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn delivery() -> Value {
        json!({
            "type": "TransientFailure", "time": "2026-11-18T11:06:40.123Z", "id": "0193ab",
            "sender": "news@src.example", "recipient": "Bob@Dest.example", "size": 2048,
            "queue": "dest.example", "site": "mx.dest.example", "source": "ip1", "attempt": 2,
            "response": {"code": 421, "enhanced": "4.7.0", "text": "try later"},
            "peer": "192.0.2.7:25", "queue_time_ms": 65_000, "campaign": "spring"
        })
    }

    #[test]
    fn filters_match_fields_paths_and_case() {
        let e = delivery();
        assert!(filter(&[]).matches(&e));
        assert!(filter(&["recipient=bob@dest.example"]).matches(&e));
        assert!(filter(&["type=transientfailure", "queue=dest.example"]).matches(&e));
        assert!(filter(&["response.code=421"]).matches(&e));
        assert!(filter(&["response.enhanced=4.7.0", "attempt=2"]).matches(&e));
        assert!(filter(&["campaign=spring"]).matches(&e));
        // Same field twice: either value.
        assert!(filter(&["type=Bounce", "type=TransientFailure"]).matches(&e));
        // Different fields: all of them.
        assert!(!filter(&["type=TransientFailure", "queue=other.example"]).matches(&e));
        assert!(
            !filter(&["recipient=bob@dest"]).matches(&e),
            "exact, not substring"
        );
        assert!(!filter(&["response.code.x=1"]).matches(&e));
        assert!(!filter(&["tenant=acme"]).matches(&e), "absent field");
        assert!(Filter::parse(&["recipient".into()]).is_err());
        assert!(Filter::parse(&["=x".into()]).is_err());
        // A value may itself contain '='.
        assert!(filter(&["response.text=a=b"]).fields["response.text"] == ["a=b"]);
    }

    #[test]
    fn human_lines_show_what_matters_and_every_extra_field() {
        let line = human(&delivery());
        assert_eq!(
            line,
            "2026-11-18T11:06:40.123Z TransientFailure 0193ab news@src.example -> Bob@Dest.example \
             queue=dest.example site=mx.dest.example source=ip1 attempt=2 peer=192.0.2.7:25 \
             campaign=\"spring\" 421 4.7.0 \"try later\" after 1m"
        );
        let reception = json!({
            "type": "Reception", "time": "t", "id": "i", "sender": "", "recipient": "r@x",
            "size": 10, "queue": "x", "site": "", "source": "", "attempt": 0,
            "peer": "127.0.0.1:5000", "queue_time_ms": 0
        });
        assert_eq!(
            human(&reception),
            "t Reception        i <> -> r@x size=10 client=127.0.0.1:5000"
        );
    }

    #[test]
    fn since_accepts_times_dates_and_durations() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        let t = |s: &str| events::rfc3339(parse_since(s, now).unwrap());
        assert_eq!(t("2026-11-18T11:00:00Z"), "2026-11-18T11:00:00.000Z");
        assert_eq!(t("2026-11-18T11:00:00.250Z"), "2026-11-18T11:00:00.250Z");
        assert_eq!(t("2026-11-18"), "2026-11-18T00:00:00.000Z");
        assert_eq!(t("2h"), "2026-11-18T09:06:40.000Z");
        assert!(parse_since("yesterday", now).is_err());
    }

    #[test]
    fn printer_filters_by_time_and_fields_and_keeps_raw_json() {
        use tail::Sink;
        let mut p = Printer {
            out: Vec::new(),
            filter: filter(&["queue=dest.example"]),
            since: Some("2026-11-18T11:00:00.000Z".into()),
            json: true,
            skipped: 0,
        };
        let early = json!({"time": "2026-11-18T10:59:59.999Z", "queue": "dest.example"});
        let late = json!({"time": "2026-11-18T11:00:00.000Z", "queue": "dest.example"});
        let other = json!({"time": "2026-11-18T12:00:00.000Z", "queue": "other.example"});
        for v in [&early, &late, &other] {
            p.line(v.to_string().as_bytes()).unwrap();
        }
        p.line(b"{torn").unwrap();
        assert_eq!(String::from_utf8(p.out).unwrap(), format!("{late}\n"));
        assert_eq!(p.skipped, 1);
    }
}
