//! Test harness: starts the real `keel` binary and real peers (Postfix's smtp-source and
//! smtp-sink, Python aiosmtpd and dnslib servers from `tests/peers/`) on loopback, and stops
//! every process it started by PID. Every wait is bounded.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A child process stopped (TERM, then KILL) when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command) -> Proc {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            child,
            name: name.to_string(),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY-free: the `kill` command keeps this crate's tests free of unsafe code.
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status();
    }

    /// Sends SIGTERM and waits up to `grace` for exit; SIGKILL after that.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Ok(Some(s)) = self.child.try_wait() {
            return Some(s);
        }
        self.signal(15);
        let end = Instant::now() + grace;
        while Instant::now() < end {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// A TCP port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

/// Waits until something accepts on 127.0.0.1:`port`.
pub fn wait_port(port: u16, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_millis(200),
        )
        .is_ok()
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

/// Polls `f` every 50 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn peers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/peers")
}

pub fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

/// A running Keel daemon on a private directory.
pub struct Keel {
    pub proc: Option<Proc>,
    pub dir: PathBuf,
    pub smtp_port: u16,
    pub http_port: u16,
    pub config: PathBuf,
    pub _tmp: Option<tempfile::TempDir>,
}

/// The sections a test adds to the generated configuration.
#[derive(Default, Clone)]
pub struct Conf {
    /// Extra keys for the `[smtp]` table.
    pub smtp: String,
    /// Further tables (`[delivery]`, `[[route]]`, `[retry]`, `[dns]`...). It is written
    /// right after `[log]`'s `dir`, so keys before its first table header extend `[log]`.
    pub rest: String,
}

impl Keel {
    pub fn start(conf: &Conf) -> Keel {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut k = Keel {
            proc: None,
            dir: dir.clone(),
            smtp_port: free_port(),
            http_port: free_port(),
            config: dir.join("keel.toml"),
            _tmp: Some(tmp),
        };
        k.write_config(conf);
        k.launch();
        k
    }

    pub fn write_config(&self, conf: &Conf) {
        let text = format!(
            "[smtp]\nlisten = \"127.0.0.1:{}\"\nhostname = \"keel.test\"\n{}\n\n\
             [http]\nlisten = \"127.0.0.1:{}\"\n\n[spool]\ndir = \"{}/spool\"\n\n\
             [log]\ndir = \"{}/log\"\n\n{}\n",
            self.smtp_port,
            conf.smtp,
            self.http_port,
            self.dir.display(),
            self.dir.display(),
            conf.rest
        );
        std::fs::write(&self.config, text).expect("write config");
    }

    /// Starts (or restarts) the daemon and waits until it listens.
    pub fn launch(&mut self) {
        assert!(self.proc.is_none(), "already running");
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("keel.stderr"))
            .expect("stderr file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_keel"));
        cmd.arg("serve")
            .arg("--config")
            .arg(&self.config)
            .env("KEEL_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let mut p = Proc::spawn("keel", &mut cmd);
        if !wait_port(self.smtp_port, Duration::from_secs(30)) {
            p.kill9();
            panic!("keel did not listen on SMTP; stderr:\n{}", self.stderr());
        }
        self.proc = Some(p);
    }

    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
    }

    /// SIGTERM; returns the exit status if it stopped within `grace`.
    pub fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        self.proc.take().and_then(|mut p| p.stop(grace))
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("keel.stderr")).unwrap_or_default()
    }

    /// All events logged so far, from rotated segments too (a test running across midnight
    /// UTC sees the daily rotation).
    pub fn events(&self) -> Vec<Value> {
        event_log_lines(&self.dir.join("log"))
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn events_of(&self, kind: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["type"] == kind)
            .collect()
    }

    /// Waits until at least `n` events of `kind` are logged.
    pub fn wait_events(&self, kind: &str, n: usize, timeout: Duration) -> Vec<Value> {
        let mut got = Vec::new();
        wait_until(timeout, || {
            got = self.events_of(kind);
            got.len() >= n
        });
        got
    }

    pub fn http_get(&self, path: &str) -> (u16, String) {
        http_get(self.http_port, path)
    }
}

impl Drop for Keel {
    fn drop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.stop(Duration::from_secs(10));
        }
    }
}

/// Every line of the event log in `dir`: rotated segments (`events-*.jsonl`, and
/// `events-*.jsonl.zst` decompressed with an independent decoder call) in name order, then
/// the live `events.jsonl`. A segment present in both forms is read once (plain).
pub fn event_log_lines(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with("events-"))
                .filter(|n| n.ends_with(".jsonl") || n.ends_with(".jsonl.zst"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let plain: std::collections::HashSet<String> = names
        .iter()
        .filter(|n| n.ends_with(".jsonl"))
        .cloned()
        .collect();
    names.retain(|n| !n.strip_suffix(".zst").is_some_and(|p| plain.contains(p)));
    names.push("events.jsonl".into());
    let mut lines = Vec::new();
    for mut name in names {
        let data = match std::fs::read(dir.join(&name)) {
            Ok(d) => d,
            // Compressed (and removed) since it was listed.
            Err(_) if name.starts_with("events-") && !name.ends_with(".zst") => {
                name.push_str(".zst");
                match std::fs::read(dir.join(&name)) {
                    Ok(d) => d,
                    Err(_) => continue,
                }
            }
            Err(_) => continue,
        };
        let text = if name.ends_with(".zst") {
            let mut out = Vec::new();
            let mut d = ruzstd::decoding::StreamingDecoder::new(&data[..])
                .unwrap_or_else(|e| panic!("{name}: not zstd: {e}"));
            d.read_to_end(&mut out)
                .unwrap_or_else(|e| panic!("{name}: cannot decompress: {e}"));
            out
        } else {
            data
        };
        let text = String::from_utf8(text).unwrap_or_else(|_| panic!("{name}: not UTF-8"));
        lines.extend(text.lines().map(str::to_owned));
    }
    lines
}

/// A minimal HTTP/1.1 GET over a real socket: (status, body).
/// A minimal HTTP/1.1 POST of a JSON body over a real socket: (status, body).
pub fn http_post(port: u16, path: &str, body: &str, token: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect HTTP");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{auth}\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

pub fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect HTTP");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

/// The Python aiosmtpd sink (`tests/peers/sink.py`).
pub struct PySink {
    pub proc: Proc,
    pub port: u16,
    pub out: PathBuf,
}

impl PySink {
    pub fn start(dir: &Path, args: &[&str]) -> PySink {
        Self::start_on(dir, free_port(), args)
    }

    pub fn start_on(dir: &Path, port: u16, args: &[&str]) -> PySink {
        let out = dir.join(format!("sink-{port}.jsonl"));
        let mut cmd = Command::new(python());
        cmd.arg(peers_dir().join("sink.py"))
            .arg("--port")
            .arg(port.to_string())
            .arg("--out")
            .arg(&out)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let proc = Proc::spawn("sink.py", &mut cmd);
        assert!(
            wait_port(port, Duration::from_secs(20)),
            "sink.py did not listen"
        );
        PySink { proc, port, out }
    }

    pub fn records(&self) -> Vec<Value> {
        let Ok(f) = std::fs::File::open(&self.out) else {
            return Vec::new();
        };
        BufReader::new(f)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| serde_json::from_str(&l).ok())
            .collect()
    }

    pub fn wait_count(&self, n: usize, timeout: Duration) -> Vec<Value> {
        let mut got = Vec::new();
        wait_until(timeout, || {
            got = self.records();
            got.len() >= n
        });
        got
    }
}

/// Postfix's `smtp-sink`, counting messages (`-c`).
pub struct PostfixSink {
    pub proc: Proc,
    pub port: u16,
    counters: PathBuf,
}

impl PostfixSink {
    pub fn start(dir: &Path) -> PostfixSink {
        let port = free_port();
        let counters = dir.join(format!("smtp-sink-{port}.counters"));
        let out = std::fs::File::create(&counters).expect("counter file");
        let mut cmd = Command::new("/usr/sbin/smtp-sink");
        cmd.arg("-c").arg("-4");
        if is_root() {
            cmd.arg("-u").arg("nobody");
        }
        cmd.arg("-h")
            .arg("sink.test")
            .arg(format!("inet:127.0.0.1:{port}"))
            .arg("256")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(Stdio::null());
        let proc = Proc::spawn("smtp-sink", &mut cmd);
        assert!(
            wait_port(port, Duration::from_secs(10)),
            "smtp-sink did not listen"
        );
        PostfixSink {
            proc,
            port,
            counters,
        }
    }

    /// Messages received so far (the last complete `mesg=` counter record).
    pub fn count(&self) -> u64 {
        let data = std::fs::read(&self.counters).unwrap_or_default();
        let text = String::from_utf8_lossy(&data);
        let mut records: Vec<&str> = text.split('\r').collect();
        records.pop(); // possibly incomplete
        records
            .iter()
            .rev()
            .find_map(|r| r.trim().rsplit("mesg=").next()?.parse().ok())
            .unwrap_or(0)
    }
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs Postfix's `smtp-source` to completion (bounded) and returns its exit status.
pub fn smtp_source(port: u16, sessions: u32, messages: u32, size: u32, rcpt: &str) -> ExitStatus {
    let mut cmd = Command::new("/usr/sbin/smtp-source");
    cmd.args([
        "-4",
        "-c",
        "-s",
        &sessions.to_string(),
        "-m",
        &messages.to_string(),
    ])
    .args(["-l", &size.to_string(), "-f", "sender@src.test", "-t", rcpt])
    .args(["-M", "client.src.test", "-S", "test message"])
    .arg(format!("127.0.0.1:{port}"))
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let mut p = Proc::spawn("smtp-source", &mut cmd);
    let end = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(Some(s)) = p.child.try_wait() {
            return s;
        }
        assert!(Instant::now() < end, "smtp-source did not finish in time");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The Python DNS server (`tests/peers/dns.py`) serving `zone` (JSON).
pub struct Dns {
    pub proc: Proc,
    pub port: u16,
}

impl Dns {
    pub fn start(dir: &Path, zone: &Value) -> Dns {
        let port = free_port();
        let zone_file = dir.join(format!("zone-{port}.json"));
        std::fs::write(&zone_file, zone.to_string()).unwrap();
        let ready = dir.join(format!("dns-{port}.ready"));
        let mut cmd = Command::new(python());
        cmd.arg(peers_dir().join("dns.py"))
            .arg("--port")
            .arg(port.to_string())
            .arg("--zone")
            .arg(&zone_file)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&ready).unwrap())
            .stderr(Stdio::null());
        let proc = Proc::spawn("dns.py", &mut cmd);
        assert!(
            wait_port(port, Duration::from_secs(20)),
            "dns.py did not listen (TCP)"
        );
        Dns { proc, port }
    }
}

/// A scripted SMTP conversation over a real socket: sends each line, returns every reply.
pub struct SmtpClient {
    stream: BufReader<TcpStream>,
}

impl SmtpClient {
    pub fn connect(port: u16) -> (SmtpClient, String) {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect SMTP");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut c = SmtpClient {
            stream: BufReader::new(s),
        };
        let greeting = c.reply();
        (c, greeting)
    }

    /// Reads one reply (all its lines).
    pub fn reply(&mut self) -> String {
        let mut out = String::new();
        loop {
            let mut line = String::new();
            if self.stream.read_line(&mut line).unwrap_or(0) == 0 {
                return out;
            }
            out.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return out;
            }
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.get_mut().write_all(bytes).unwrap();
    }

    /// As [`Self::send_raw`], for tests where the server may have closed the connection.
    pub fn try_send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.get_mut().write_all(bytes)
    }

    /// Sends `line` + CRLF and returns the reply.
    pub fn cmd(&mut self, line: &str) -> String {
        self.send_raw(format!("{line}\r\n").as_bytes());
        self.reply()
    }
}

/// Runs a `keel` subcommand against `keel` (its `--config`): (success, stdout, stderr).
pub fn cli(keel: &Keel, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(args)
        .arg("--config")
        .arg(&keel.config)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
