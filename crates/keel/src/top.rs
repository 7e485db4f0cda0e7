//! `keel top`: a live terminal view of a running daemon, like `top`.
//!
//! Each refresh (`--interval`, 1 s) fetches, concurrently, `/readyz`, `/api/v1/queues`,
//! `/api/v1/stats/throughput`, `/api/v1/stats/spool` and `/api/v1/stats/actions` (the
//! dashboard's endpoints, same token, same connection rules as `keel queue`) and draws one
//! frame sized to the terminal: a header (time, queue totals, spool, readiness and
//! back-pressure stage), throughput per second over the last 10 s and the last minute, the
//! busiest scheduled queues, the busiest ready queues, active suspensions and the last shaping
//! actions. `q`, `Esc` or `Ctrl-C` quits; any other key refreshes at once.
//!
//! Throughput comes from the server's 10-second buckets. The newest bucket is the one in
//! progress, so a window of W seconds is the current bucket plus whole older buckets plus the
//! matching fraction of the oldest one; the numbers move every refresh instead of every 10 s.
//! `received` counts accepted recipients (Reception events), `bounced` everything that failed
//! for good (bounced, expired, bounced by an operator).
//!
//! `--once` prints one frame as plain text (no escape codes; as wide as the terminal, or
//! unlimited when stdout is not a terminal) and `--json` one snapshot as JSON, for scripts and
//! tests. A fetch error in the live view is shown in the header and the last data kept.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use clap::Args;
use crossterm::event::{self, Event as TermEvent, KeyCode, KeyEventKind, KeyModifiers};
use crossterm::style::{Attribute, Print, SetAttribute};
use crossterm::{cursor, execute, queue, terminal};
use serde_json::{Value, json};

use crate::cli::{self, Client, age, s};

/// `keel top` options.
#[derive(Args, Debug, Clone)]
pub struct TopArgs {
    /// Time between refreshes ("1s", "500ms", "2s", or plain seconds).
    #[arg(long, default_value = "1s", value_parser = parse_interval)]
    pub interval: Duration,
    /// Print one frame as plain text and exit.
    #[arg(long)]
    pub once: bool,
    /// How many of the busiest queues to fetch per refresh.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    #[command(flatten)]
    pub api: cli::Api,
}

fn parse_interval(v: &str) -> Result<Duration, String> {
    let d = match v.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => Duration::from_secs_f64(secs),
        Ok(_) => return Err("must be a positive duration".into()),
        Err(_) => humantime::parse_duration(v).map_err(|e| e.to_string())?,
    };
    if d < Duration::from_millis(100) {
        return Err("at least 100ms".into());
    }
    Ok(d)
}

/// One fetch of everything a frame shows.
#[derive(Debug, Clone, Default)]
struct Snapshot {
    /// Local wall clock, seconds since the Unix epoch.
    now_s: f64,
    /// `/readyz`: status, and stage while back-pressure is on.
    ready: Value,
    queues: Value,
    throughput: Value,
    spool: Value,
    actions: Value,
}

/// Per-second rates over one window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Rates {
    received: f64,
    delivered: f64,
    deferred: f64,
    bounced: f64,
}

impl Rates {
    fn json(&self) -> Value {
        let r = |x: f64| (x * 100.0).round() / 100.0;
        json!({
            "received": r(self.received),
            "delivered": r(self.delivered),
            "deferred": r(self.deferred),
            "bounced": r(self.bounced),
        })
    }
}

/// Rates over the last `window_s` seconds from the server's buckets (oldest first, the last
/// one in progress since its `t`).
fn rates(throughput: &Value, now_s: f64, window_s: f64) -> Rates {
    let bucket_s = throughput["bucket_s"].as_f64().unwrap_or(10.0).max(1.0);
    let buckets = throughput["buckets"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut sum = Rates::default();
    let mut remaining = window_s;
    for (i, b) in buckets.iter().rev().enumerate() {
        if remaining <= 0.0 {
            break;
        }
        // The newest bucket has run for (now - t) seconds; older ones are whole.
        let span = if i == 0 {
            let t = b["t"].as_f64().unwrap_or(now_s);
            (now_s - t).clamp(0.0, bucket_s)
        } else {
            bucket_s
        };
        let share = if span <= 0.0 {
            // Just started: count it whole, it holds what arrived this instant.
            1.0
        } else {
            (remaining / span).min(1.0)
        };
        let n = |k: &str| b[k].as_f64().unwrap_or(0.0) * share;
        sum.received += n("received");
        sum.delivered += n("delivered");
        sum.deferred += n("deferred");
        sum.bounced += n("failed");
        remaining -= span;
    }
    Rates {
        received: sum.received / window_s,
        delivered: sum.delivered / window_s,
        deferred: sum.deferred / window_s,
        bounced: sum.bounced / window_s,
    }
}

async fn get_any(c: &Client, path: &str) -> Result<Value, String> {
    let url = format!("{}{path}", c.base);
    let resp = c
        .http
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("cannot reach Keel at {url}: {e}"))?;
    let status = resp.status();
    resp.json()
        .await
        .map_err(|e| format!("{url} answered {status} without JSON: {e}"))
}

async fn fetch(c: &Client, limit: usize) -> Result<Snapshot, String> {
    let get = |p: String| async move { c.call(reqwest::Method::GET, &p, None).await };
    let fut = async {
        tokio::join!(
            get_any(c, "/readyz"),
            get(format!("/api/v1/queues?limit={limit}")),
            get("/api/v1/stats/throughput".into()),
            get("/api/v1/stats/spool".into()),
            get("/api/v1/stats/actions".into()),
        )
    };
    let (ready, queues, throughput, spool, actions) =
        tokio::time::timeout(Duration::from_secs(10), fut)
            .await
            .map_err(|_| format!("{} did not answer within 10 s", c.base))?;
    Ok(Snapshot {
        now_s: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()),
        ready: ready?,
        queues: queues?,
        throughput: throughput?,
        spool: spool?,
        actions: actions?,
    })
}

fn to_json(snap: &Snapshot) -> Value {
    let q = &snap.queues;
    json!({
        "time": rfc3339(snap.now_s),
        "ready": snap.ready,
        "messages": q["messages"],
        "recipients": q["recipients"],
        "bytes": q["bytes"],
        "scheduled_queues": q["scheduled_queues"],
        "ready_queues": q["ready_queues"],
        "throughput": {
            "last_10s": rates(&snap.throughput, snap.now_s, 10.0).json(),
            "last_1m": rates(&snap.throughput, snap.now_s, 60.0).json(),
        },
        "spool": snap.spool,
        "scheduled": q["scheduled"],
        "ready_queues_busiest": q["ready"],
        "suspensions": q["suspensions"],
        "actions": snap.actions["actions"],
    })
}

fn rfc3339(epoch_s: f64) -> String {
    time::OffsetDateTime::from_unix_timestamp(epoch_s as i64)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn clock(epoch_s: f64) -> String {
    let secs = epoch_s as u64 % 86_400;
    format!("{:02}:{:02}:{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

/// Bytes as people read them.
fn bytes(v: &Value) -> String {
    let Some(n) = v.as_u64() else {
        return "-".into();
    };
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut x = n as f64;
    let mut u = 0;
    while x >= 1000.0 && u < UNITS.len() - 1 {
        x /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{x:.1} {}", UNITS[u])
    }
}

fn rate(x: f64) -> String {
    if x == 0.0 {
        "0".into()
    } else if x < 10.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.0}")
    }
}

/// How a line is drawn in the live view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    Plain,
    /// The header and section titles.
    Title,
    /// Column headings.
    Columns,
}

#[derive(Debug, Clone)]
struct Line {
    text: String,
    style: Style,
}

fn line(style: Style, text: impl Into<String>) -> Line {
    Line {
        text: text.into(),
        style,
    }
}

/// A section: a title, column headings and rows, laid out as a table.
struct Section {
    title: String,
    columns: Vec<&'static str>,
    /// Right-aligned columns (numbers).
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
    /// Shown instead of the column headings when there are no rows.
    empty: &'static str,
}

impl Section {
    /// At most `max_rows` rows, each line at most `width` characters (the last column is cut).
    fn lines(&self, max_rows: usize, width: Option<usize>) -> Vec<Line> {
        let fit = |s: String| match width {
            Some(w) => cut(&s, w),
            None => s,
        };
        let mut out = vec![line(Style::Title, fit(self.title.clone()))];
        if self.rows.is_empty() {
            out.push(line(Style::Plain, fit(format!("  {}", self.empty))));
            return out;
        }
        let shown = &self.rows[..self.rows.len().min(max_rows)];
        let n = self.columns.len();
        let mut w: Vec<usize> = self.columns.iter().map(|c| c.chars().count()).collect();
        for r in shown {
            for (i, c) in r.iter().enumerate().take(n) {
                w[i] = w[i].max(c.chars().count());
            }
        }
        // Cap wide middle columns (site names) so the last one keeps some room.
        if let Some(width) = width {
            for wi in w.iter_mut().take(n.saturating_sub(1)) {
                *wi = (*wi).min((width / 3).max(8));
            }
        }
        let fmt = |cells: Vec<&str>| -> String {
            let mut s = String::from(" ");
            for (i, c) in cells.iter().enumerate() {
                let last = i + 1 == n;
                let c = if last { (*c).to_string() } else { cut(c, w[i]) };
                if last {
                    s.push_str(&c);
                } else if self.right[i] {
                    s.push_str(&format!("{c:>0$}  ", w[i]));
                } else {
                    s.push_str(&format!("{c:<0$}  ", w[i]));
                }
            }
            let s = s.trim_end().to_string();
            match width {
                Some(width) => cut(&s, width),
                None => s,
            }
        };
        out.push(line(Style::Columns, fmt(self.columns.clone())));
        for r in shown {
            out.push(line(
                Style::Plain,
                fmt(r.iter().map(String::as_str).collect()),
            ));
        }
        if self.rows.len() > shown.len() {
            out.push(line(
                Style::Plain,
                fit(format!("  … {} more", self.rows.len() - shown.len())),
            ));
        }
        out
    }

    /// Lines it takes with `rows` rows shown.
    fn height(&self, rows: usize) -> usize {
        if self.rows.is_empty() {
            2
        } else {
            2 + rows.min(self.rows.len()) + usize::from(rows < self.rows.len())
        }
    }
}

/// `text` cut to `width` characters, with an ellipsis when cut.
fn cut(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    if width == 0 {
        return String::new();
    }
    let mut s: String = text.chars().take(width - 1).collect();
    s.push('…');
    s
}

fn selector(x: &Value) -> String {
    ["domain", "site", "source", "campaign", "tenant"]
        .iter()
        .filter_map(|k| x[*k].as_str().map(|v| format!("{k}={v}")))
        .collect::<Vec<_>>()
        .join(" ")
}

fn response(r: &Value) -> String {
    if r.is_null() {
        return "-".into();
    }
    // Code 0: no reply at all (connection or DNS trouble); the enhanced code says which.
    [s(&r["code"]), s(&r["enhanced"]), s(&r["text"])]
        .into_iter()
        .filter(|x| !x.is_empty() && x != "-" && x != "0")
        .collect::<Vec<_>>()
        .join(" ")
}

fn sections(snap: &Snapshot) -> [Section; 4] {
    let q = &snap.queues;
    let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
    let scheduled = list(&q["scheduled"])
        .iter()
        .map(|x| {
            let parked = x["parked"].as_u64().unwrap_or(0);
            vec![
                s(&x["domain"]),
                s(&x["messages"]),
                s(&x["recipients"]),
                age(x["oldest_age_s"].as_u64().unwrap_or(0)),
                x["next_attempt_in_s"]
                    .as_u64()
                    .map_or("-".into(), |n| format!("in {}", age(n))),
                if parked > 0 {
                    parked.to_string()
                } else {
                    "-".into()
                },
                response(&x["last_response"]),
            ]
        })
        .collect();
    let ready = list(&q["ready"])
        .iter()
        .map(|x| {
            let (c, e, m) = (
                s(&x["connections"]),
                s(&x["effective_max_connections"]),
                s(&x["max_connections"]),
            );
            let conns = if e == m {
                format!("{c}/{e}")
            } else {
                format!("{c}/{e} (max {m})")
            };
            let mut limits = Vec::new();
            if let Some(t) = x["throttle"].as_str() {
                limits.push(format!("throttled {t}"));
            }
            if let Some(r) = x["max_message_rate"].as_str() {
                limits.push(format!("rate {r}"));
            }
            vec![
                s(&x["source"]),
                s(&x["site"]),
                s(&x["queued"]),
                s(&x["outstanding"]),
                s(&x["backlog"]),
                conns,
                if limits.is_empty() {
                    "-".into()
                } else {
                    limits.join(", ")
                },
            ]
        })
        .collect();
    let suspensions = list(&q["suspensions"])
        .iter()
        .map(|x| {
            vec![
                selector(x),
                x["until"].as_str().unwrap_or("resumed by hand").to_string(),
                s(&x["reason"]),
            ]
        })
        .collect();
    let actions = list(&snap.actions["actions"])
        .iter()
        .map(|x| {
            let time = x["time"].as_str().unwrap_or("");
            // "2026-11-28T02:55:01.123Z" → "02:55:01"
            let hms = time.get(11..19).unwrap_or(time).to_string();
            vec![
                hms,
                s(&x["action"]),
                s(&x["queue"]),
                format!("{} {}", s(&x["source"]), s(&x["site"])),
                response(&x["response"]),
            ]
        })
        .collect();
    let count = |v: &Value, k: &str| v[k].as_array().map_or(0, Vec::len);
    [
        Section {
            title: format!(
                "SCHEDULED QUEUES  {} of {} domains, busiest first",
                count(q, "scheduled"),
                s(&q["scheduled_queues"])
            ),
            columns: vec![
                "domain",
                "msgs",
                "rcpts",
                "oldest",
                "next try",
                "parked",
                "last error",
            ],
            right: vec![false, true, true, true, false, true, false],
            rows: scheduled,
            empty: "nothing queued",
        },
        Section {
            title: format!(
                "READY QUEUES  {} of {} (source, site)",
                count(q, "ready"),
                s(&q["ready_queues"])
            ),
            columns: vec![
                "source",
                "site",
                "queued",
                "in flight",
                "waiting",
                "conns",
                "throttle",
            ],
            right: vec![false, false, true, true, true, true, false],
            rows: ready,
            empty: "no ready queue",
        },
        Section {
            title: format!("SUSPENSIONS  {}", count(q, "suspensions")),
            columns: vec!["suspended", "until", "reason"],
            right: vec![false, false, false],
            rows: suspensions,
            empty: "none",
        },
        Section {
            title: "SHAPING ACTIONS  newest first".into(),
            columns: vec!["time", "action", "queue", "source/site", "reply"],
            right: vec![false, false, false, false, false],
            rows: actions,
            empty: "none",
        },
    ]
}

/// The frame as lines. `size`: (columns, rows) to fit, or `None` for everything, uncut.
fn frame(snap: &Snapshot, error: Option<&str>, size: Option<(usize, usize)>) -> Vec<Line> {
    let width = size.map(|(c, _)| c.max(20));
    let fit = |s: String| match width {
        Some(w) => cut(&s, w),
        None => s,
    };
    let q = &snap.queues;
    let sp = &snap.spool;
    let ready = match snap.ready["status"].as_str() {
        Some("backpressure") => format!(
            "BACK-PRESSURE: {}",
            snap.ready["stage"].as_str().unwrap_or("?")
        ),
        Some(st) => st.to_string(),
        None => "?".into(),
    };
    let mut out = vec![
        line(
            Style::Title,
            fit(format!(
                "keel top  {}  {}  queued: {} msgs, {} rcpts, {}",
                clock(snap.now_s),
                ready,
                s(&q["messages"]),
                s(&q["recipients"]),
                bytes(&q["bytes"]),
            )),
        ),
        line(
            Style::Plain,
            fit(format!(
                "spool: {} live msgs, {} live, {} on disk in {} segments, {} free",
                s(&sp["live_messages"]),
                bytes(&sp["live_bytes"]),
                bytes(&sp["disk_bytes"]),
                s(&sp["segments"]),
                bytes(&sp["free_bytes"]),
            )),
        ),
    ];
    if let Some(e) = error {
        out.push(line(Style::Title, fit(format!("! {e}"))));
    }
    let r10 = rates(&snap.throughput, snap.now_s, 10.0);
    let r60 = rates(&snap.throughput, snap.now_s, 60.0);
    let through = Section {
        title: "THROUGHPUT  per second (recipients)".into(),
        columns: vec!["", "received", "delivered", "deferred", "bounced"],
        right: vec![false, true, true, true, true],
        rows: [("last 10s", r10), ("last 1m", r60)]
            .iter()
            .map(|(name, r)| {
                vec![
                    name.to_string(),
                    rate(r.received),
                    rate(r.delivered),
                    rate(r.deferred),
                    rate(r.bounced),
                ]
            })
            .collect(),
        empty: "",
    };
    // Blank lines between sections, unless the terminal is short.
    let gaps = size.is_none_or(|(_, rows)| rows > 30);
    if gaps {
        out.push(line(Style::Plain, String::new()));
    }
    out.extend(through.lines(2, width));
    let secs = sections(snap);
    let rows_for = match size {
        None => [usize::MAX; 4],
        Some((_, rows)) => {
            // Share what is left in priority order: a few rows for the scheduled queues and
            // the suspensions first, then the ready queues and the actions, then the rest
            // round-robin.
            let fixed = out.len() + if gaps { secs.len() } else { 0 };
            let mut left = rows.saturating_sub(fixed);
            let mut alloc = [0usize; 4];
            let base: usize = secs.iter().map(|s| s.height(0)).sum();
            left = left.saturating_sub(base);
            for (i, want) in [(0, 3), (2, 3), (1, 2), (3, 2)] {
                let extra = secs[i].height(want) - secs[i].height(0);
                let extra = extra.min(left);
                alloc[i] = rows_shown(&secs[i], extra);
                left -= secs[i].height(alloc[i]) - secs[i].height(0);
            }
            loop {
                let mut grew = false;
                for i in [0, 1, 2, 3] {
                    let cur = secs[i].height(alloc[i]);
                    let next = secs[i].height(alloc[i] + 1);
                    if alloc[i] < secs[i].rows.len() && next - cur <= left {
                        left -= next - cur;
                        alloc[i] += 1;
                        grew = true;
                    }
                }
                if !grew {
                    break;
                }
            }
            alloc
        }
    };
    for (sec, rows) in secs.iter().zip(rows_for) {
        if gaps {
            out.push(line(Style::Plain, String::new()));
        }
        out.extend(sec.lines(rows, width));
    }
    if let Some((_, rows)) = size {
        out.truncate(rows);
    }
    out
}

/// The most rows of `sec` that fit in `extra` lines beyond its empty height.
fn rows_shown(sec: &Section, extra: usize) -> usize {
    let mut n = 0;
    while n < sec.rows.len() && sec.height(n + 1) - sec.height(0) <= extra {
        n += 1;
    }
    n
}

/// `keel top`.
pub fn main(args: TopArgs) -> ExitCode {
    if args.once || args.api.json {
        return cli::run(async move {
            let c = Client::new(&args.api)?;
            let snap = fetch(&c, args.limit).await?;
            if args.api.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&to_json(&snap)).unwrap_or_default()
                );
            } else {
                let size = std::io::stdout()
                    .is_terminal()
                    .then(terminal::size)
                    .and_then(Result::ok)
                    .map(|(c, _)| (usize::from(c), usize::MAX));
                let mut out = String::new();
                for l in frame(&snap, None, size) {
                    out.push_str(&l.text);
                    out.push('\n');
                }
                print!("{out}");
            }
            Ok(())
        });
    }
    if !std::io::stdout().is_terminal() {
        eprintln!("keel: top needs a terminal; use --once or --json otherwise");
        return ExitCode::FAILURE;
    }
    cli::run(async move {
        let c = Client::new(&args.api)?;
        // The first fetch happens before the screen is taken, so a wrong address or token is
        // an ordinary error message.
        let first = fetch(&c, args.limit).await?;
        live(&c, &args, first).await
    })
}

/// Restores the terminal however the live view ends.
struct Screen;

impl Screen {
    fn take() -> Result<Screen, String> {
        terminal::enable_raw_mode().map_err(|e| format!("terminal: {e}"))?;
        let s = Screen;
        execute!(
            std::io::stdout(),
            terminal::EnterAlternateScreen,
            cursor::Hide
        )
        .map_err(|e| format!("terminal: {e}"))?;
        Ok(s)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = execute!(
            std::io::stdout(),
            cursor::Show,
            terminal::LeaveAlternateScreen
        );
        let _ = terminal::disable_raw_mode();
    }
}

fn draw(lines: &[Line]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    queue!(out, cursor::MoveTo(0, 0))?;
    for (i, l) in lines.iter().enumerate() {
        if i > 0 {
            queue!(out, Print("\r\n"))?;
        }
        match l.style {
            Style::Plain => queue!(out, Print(&l.text))?,
            Style::Title => queue!(
                out,
                SetAttribute(Attribute::Bold),
                Print(&l.text),
                SetAttribute(Attribute::Reset)
            )?,
            Style::Columns => queue!(
                out,
                SetAttribute(Attribute::Reverse),
                Print(&l.text),
                SetAttribute(Attribute::Reset)
            )?,
        }
        queue!(out, terminal::Clear(terminal::ClearType::UntilNewLine))?;
    }
    queue!(out, terminal::Clear(terminal::ClearType::FromCursorDown))?;
    out.flush()
}

/// What the keyboard asked for while waiting.
enum Key {
    Quit,
    Refresh,
    Redraw,
    Timeout,
}

/// Waits up to `d` for a key or a resize.
fn wait_key(d: Duration) -> std::io::Result<Key> {
    let end = Instant::now() + d;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() || !event::poll(left)? {
            return Ok(Key::Timeout);
        }
        match event::read()? {
            TermEvent::Key(k) if k.kind != KeyEventKind::Release => {
                let ctrl_c =
                    k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
                return Ok(match k.code {
                    KeyCode::Char('q') | KeyCode::Char('Q') | KeyCode::Esc => Key::Quit,
                    _ if ctrl_c => Key::Quit,
                    _ => Key::Refresh,
                });
            }
            TermEvent::Resize(..) => return Ok(Key::Redraw),
            _ => {}
        }
    }
}

async fn live(c: &Client, args: &TopArgs, first: Snapshot) -> Result<(), String> {
    let _screen = Screen::take()?;
    let mut snap = first;
    let mut error: Option<String> = None;
    let io = |e: std::io::Error| format!("terminal: {e}");
    loop {
        let (cols, rows) = terminal::size().map_err(io)?;
        draw(&frame(
            &snap,
            error.as_deref(),
            Some((usize::from(cols), usize::from(rows))),
        ))
        .map_err(io)?;
        // Reading keys blocks this (only) thread; nothing else runs meanwhile.
        match wait_key(args.interval).map_err(io)? {
            Key::Quit => return Ok(()),
            Key::Redraw => continue,
            Key::Refresh | Key::Timeout => {}
        }
        match fetch(c, args.limit).await {
            Ok(s) => {
                snap = s;
                error = None;
            }
            Err(e) => error = Some(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap() -> Snapshot {
        Snapshot {
            now_s: 1_800_000_015.0,
            ready: json!({"status": "backpressure", "stage": "defer"}),
            queues: json!({
                "messages": 3, "recipients": 4, "bytes": 12345,
                "scheduled_queues": 2, "ready_queues": 1,
                "scheduled": [
                    {"domain": "held.test", "messages": 2, "recipients": 3, "bytes": 1,
                     "oldest_age_s": 75, "parked": 2},
                    {"domain": "slow.test", "messages": 1, "recipients": 1, "bytes": 1,
                     "oldest_age_s": 5, "parked": 0, "next_attempt_in_s": 300,
                     "last_response": {"code": 451, "enhanced": "4.7.1", "text": "try later please"}}
                ],
                "ready": [
                    {"source": "default", "site": "mx.slow.test", "queued": 1, "connections": 1,
                     "outstanding": 1, "backlog": 0, "max_connections": 8,
                     "effective_max_connections": 4, "throttle": "10/m",
                     "max_messages_per_connection": 100}
                ],
                "suspensions": [{"domain": "held.test", "reason": "testing"}]
            }),
            throughput: json!({"bucket_s": 10, "buckets": [
                {"t": 1_799_999_990u64, "received": 10, "delivered": 0, "deferred": 0, "failed": 0},
                {"t": 1_800_000_000u64, "received": 20, "delivered": 10, "deferred": 0, "failed": 0},
                {"t": 1_800_000_010u64, "received": 5, "delivered": 5, "deferred": 1, "failed": 1}
            ]}),
            spool: json!({"live_messages": 3, "live_bytes": 4000, "disk_bytes": 8000,
                          "segments": 1, "free_bytes": 5_000_000_000u64}),
            actions: json!({"actions": [{"time": "2026-11-28T02:55:01.123Z", "queue": "slow.test",
                "site": "mx.slow.test", "source": "default", "action": "halve",
                "response": {"code": 421, "enhanced": "4.7.0", "text": "slow down"}}]}),
        }
    }

    #[test]
    fn rates_interpolate_the_bucket_in_progress() {
        let s = snap();
        // 5 s into the newest bucket: it (5) plus half of the one before (10 of 20) over 10 s.
        let r = rates(&s.throughput, s.now_s, 10.0);
        assert!((r.received - 1.5).abs() < 1e-9, "{r:?}");
        assert!((r.delivered - 1.0).abs() < 1e-9, "{r:?}");
        assert!((r.bounced - 0.1).abs() < 1e-9, "{r:?}");
        // A minute covers everything there is: 35 over 60 s.
        let r = rates(&s.throughput, s.now_s, 60.0);
        assert!((r.received - 35.0 / 60.0).abs() < 1e-9, "{r:?}");
        assert_eq!(rates(&json!({}), s.now_s, 10.0), Rates::default());
    }

    #[test]
    fn plain_frame_shows_everything() {
        let text: Vec<String> = frame(&snap(), None, None)
            .into_iter()
            .map(|l| l.text)
            .collect();
        let text = text.join("\n");
        for want in [
            "BACK-PRESSURE: defer",
            "queued: 3 msgs, 4 rcpts, 12.3 KB",
            "held.test",
            "451 4.7.1 try later please",
            "in 5m",
            "1/4 (max 8)",
            "throttled 10/m",
            "domain=held.test",
            "testing",
            "02:55:01",
            "halve",
            "5.0 GB free",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }

    #[test]
    fn frame_fits_the_terminal() {
        let mut s = snap();
        let many: Vec<Value> = (0..200)
            .map(|i| {
                json!({"domain": format!("d{i}.example.com"), "messages": 1, "recipients": 1,
                       "oldest_age_s": 1, "parked": 0,
                       "last_response": {"code": 451, "enhanced": "", "text": "x".repeat(300)}})
            })
            .collect();
        s.queues["scheduled"] = json!(many);
        for (cols, rows) in [(80, 24), (40, 10), (200, 60), (20, 3)] {
            let f = frame(&s, Some("boom"), Some((cols, rows)));
            assert!(f.len() <= rows, "{cols}x{rows}: {} lines", f.len());
            for l in &f {
                assert!(
                    l.text.chars().count() <= cols.max(20),
                    "{cols}x{rows}: {:?}",
                    l.text
                );
            }
        }
        // A tall terminal shows the suspension and the action, and many domains.
        let f = frame(&s, None, Some((120, 50)));
        let text: String = f.iter().map(|l| l.text.clone() + "\n").collect();
        assert!(text.contains("domain=held.test"), "{text}");
        assert!(text.contains("halve"), "{text}");
        assert!(text.contains("d20.example.com"), "{text}");
        assert!(text.contains("more"), "{text}");
        assert_eq!(f.len(), 50, "{text}");
    }

    #[test]
    fn interval_parses() {
        assert_eq!(parse_interval("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_interval("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_interval("1ms").is_err());
        assert!(parse_interval("soon").is_err());
    }
}
