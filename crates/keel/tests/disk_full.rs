//! A full spool disk, for real: the spool directory is a small tmpfs (needs root to mount;
//! the tests print why and pass vacuously where mounting is not permitted).
//!
//! - With back-pressure off for disk, the spool really hits ENOSPC: clients get 451/452, never
//!   a 250 for a message that was not written; every 250 is delivered once the destination is
//!   up; and once space is freed Keel accepts again.
//! - With back-pressure on, the stages follow free space: slow (MAIL held back), defer (`452
//!   4.3.1`), refuse (`421 4.3.2` at connect), and back to normal; `/readyz` says which.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const MIB: usize = 1024 * 1024;

/// A tmpfs mounted for the test's lifetime.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size_mib: usize) -> Option<Tmpfs> {
        if !is_root() {
            println!("SKIPPED: mounting a tmpfs needs root");
            return None;
        }
        std::fs::create_dir_all(dir).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs(dir.to_path_buf())),
            Ok(o) => {
                println!(
                    "SKIPPED: cannot mount a tmpfs here: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                println!("SKIPPED: cannot run mount: {e}");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A Keel whose spool directory is a tmpfs of `size_mib`; `None` (skipped) without mounting.
fn keel_on_tmpfs(size_mib: usize, conf: &Conf) -> Option<(Keel, Tmpfs)> {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_path_buf();
    let fs = Tmpfs::mount(&dir.join("spool"), size_mib)?;
    let mut keel = Keel {
        proc: None,
        dir: dir.clone(),
        smtp_port: free_port(),
        http_port: free_port(),
        config: dir.join("keel.toml"),
        _tmp: Some(tmp),
    };
    keel.write_config(conf);
    keel.launch();
    Some((keel, fs))
}

fn ballast(fs: &Tmpfs, bytes: usize) {
    std::fs::write(fs.0.join("ballast"), vec![7u8; bytes]).expect("write ballast");
}

/// One message on an open session: the reply to MAIL if it was not 250, else the final one.
fn send(c: &mut SmtpClient, id: &str, body_size: usize) -> String {
    let r = c.cmd("MAIL FROM:<a@src.test>");
    if !r.starts_with("250") {
        return r;
    }
    let r = c.cmd("RCPT TO:<b@dest.test>");
    if !r.starts_with("250") {
        c.cmd("RSET");
        return r;
    }
    let r = c.cmd("DATA");
    if !r.starts_with("354") {
        return r;
    }
    let mut msg = format!("Subject: fill\r\nMessage-ID: {id}\r\n\r\n");
    let line = format!("{}\r\n", "f".repeat(78));
    while msg.len() < body_size {
        msg.push_str(&line);
    }
    msg.push_str(".\r\n");
    c.send_raw(msg.as_bytes());
    c.reply()
}

fn code(reply: &str) -> String {
    reply.get(..9).unwrap_or(reply).trim().to_string()
}

#[test]
fn a_full_spool_never_acknowledges_a_lost_message() {
    let sink_port = free_port();
    let conf = Conf {
        smtp: "backpressure = { disk_free_slow = \"none\", disk_free_defer = \"none\", disk_free_refuse = \"none\" }".into(),
        rest: format!(
            "[[route]]\ndomain = \"*\"\nsmarthost = \"127.0.0.1:{sink_port}\"\n\
             [retry]\nintervals = [\"1s\"]\nmax_age = \"1h\"\n"
        ),
    };
    let Some((keel, fs)) = keel_on_tmpfs(16, &conf) else {
        return;
    };
    // Leave about 3 MiB: the spool fills after a few dozen 64 KiB messages.
    ballast(&fs, 13 * MIB);

    let (mut c, _) = SmtpClient::connect(keel.smtp_port);
    c.cmd("EHLO filler.test");
    let mut acked = HashSet::new();
    let mut refused: HashMap<String, usize> = HashMap::new();
    let mut n = 0;
    let mut consecutive_failures = 0;
    while n < 400 && consecutive_failures < 20 {
        let id = format!("<full-{n}@src.test>");
        n += 1;
        let r = send(&mut c, &id, 64 * 1024);
        if r.starts_with("250") {
            acked.insert(id);
            consecutive_failures = 0;
        } else {
            // A dropped connection (empty reply) is no acknowledgement either.
            assert!(
                r.is_empty() || r.starts_with('4'),
                "a full disk is a temporary failure: {r}"
            );
            *refused.entry(code(&r)).or_default() += 1;
            consecutive_failures += 1;
            if r.is_empty() || r.starts_with("421") {
                let (c2, _) = SmtpClient::connect(keel.smtp_port);
                c = c2;
                c.cmd("EHLO filler.test");
            }
        }
    }
    let acked_full = acked.len();
    println!(
        "disk full: {n} attempts, {acked_full} accepted (250), refused {refused:?}; keel still up: {}",
        keel.http_get("/healthz").0 == 200
    );
    assert!(!refused.is_empty(), "the spool never filled up");
    assert!(acked_full > 0);

    // Space comes back: Keel accepts again without a restart.
    std::fs::remove_file(fs.0.join("ballast")).expect("remove ballast");
    let mut after = 0;
    let start = Instant::now();
    while after < 10 && start.elapsed() < Duration::from_secs(30) {
        let id = format!("<after-{after}@src.test>");
        let r = send(&mut c, &id, 64 * 1024);
        if r.starts_with("250") {
            acked.insert(id);
            after += 1;
        } else if r.is_empty() || r.starts_with("421") {
            let (c2, _) = SmtpClient::connect(keel.smtp_port);
            c = c2;
            c.cmd("EHLO filler.test");
        } else {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    println!("space freed: 10 more accepted after {:?}", start.elapsed());
    assert_eq!(after, 10, "Keel accepts again once space is free");
    let _ = c.cmd("QUIT");

    // The destination comes up: every acknowledged message arrives.
    let sink = PySink::start_on(&keel.dir, sink_port, &[]);
    let mut delivered: Vec<String> = Vec::new();
    wait_until(Duration::from_secs(120), || {
        delivered = sink
            .records()
            .iter()
            .filter_map(|r| r["message_id"].as_str().map(str::to_string))
            .collect();
        let got: HashSet<&String> = delivered.iter().collect();
        acked.iter().all(|id| got.contains(id))
    });
    let unique: HashSet<&String> = delivered.iter().collect();
    let lost = acked.iter().filter(|id| !unique.contains(id)).count();
    let not_acked_but_delivered = unique.iter().filter(|id| !acked.contains(**id)).count();
    println!(
        "delivered {} ({} unique) of {} acknowledged; lost {lost}; duplicates {}; \
         delivered without a 250: {not_acked_but_delivered}",
        delivered.len(),
        unique.len(),
        acked.len(),
        delivered.len() - unique.len()
    );
    assert_eq!(lost, 0, "every 250 is delivered");
    assert_eq!(
        not_acked_but_delivered, 0,
        "a message refused for lack of space must not be delivered as well"
    );
    drop(keel);
    drop(fs);
}

#[test]
fn backpressure_stages_follow_free_space() {
    let conf = Conf {
        smtp: "backpressure = { disk_free_slow = \"24MB\", disk_free_defer = \"16MB\", disk_free_refuse = \"8MB\", tarpit = \"1s\" }".into(),
        rest: String::new(),
    };
    let Some((keel, fs)) = keel_on_tmpfs(32, &conf) else {
        return;
    };
    let stage_is = |word: &str| {
        wait_until(Duration::from_secs(10), || {
            let (status, body) = keel.http_get("/readyz");
            if word == "ready" {
                status == 200
            } else {
                status == 503 && body.contains(&format!("\"stage\":\"{word}\""))
            }
        })
    };
    assert!(stage_is("ready"), "normal at start");

    // Slow: MAIL is answered, but only after the tarpit.
    ballast(&fs, 12 * MIB);
    assert!(stage_is("slow"), "{:?}", keel.http_get("/readyz"));
    let (mut c, _) = SmtpClient::connect(keel.smtp_port);
    c.cmd("EHLO c.test");
    let t = Instant::now();
    let r = c.cmd("MAIL FROM:<a@src.test>");
    let tarpit = t.elapsed();
    assert!(r.starts_with("250"), "{r}");
    assert!(tarpit >= Duration::from_millis(900), "{tarpit:?}");
    c.cmd("RSET");

    // Defer: 452 4.3.1 at MAIL, on the same session.
    ballast(&fs, 20 * MIB);
    assert!(stage_is("defer"), "{:?}", keel.http_get("/readyz"));
    let r = c.cmd("MAIL FROM:<a@src.test>");
    assert!(r.starts_with("452 4.3.1"), "{r}");

    // Refuse: 421 4.3.2 at connect.
    ballast(&fs, 28 * MIB);
    assert!(stage_is("refuse"), "{:?}", keel.http_get("/readyz"));
    let (_, greeting) = SmtpClient::connect(keel.smtp_port);
    assert!(greeting.starts_with("421 4.3.2"), "{greeting}");

    // Space back: down a stage per five calm seconds, then mail flows again.
    std::fs::remove_file(fs.0.join("ballast")).expect("remove ballast");
    let t = Instant::now();
    assert!(
        wait_until(Duration::from_secs(30), || keel.http_get("/readyz").0
            == 200),
        "back to normal"
    );
    let recovered = t.elapsed();
    let (mut c, _) = SmtpClient::connect(keel.smtp_port);
    c.cmd("EHLO c.test");
    let r = send(&mut c, "<back@src.test>", 1000);
    assert!(r.starts_with("250"), "{r}");
    let stderr = keel.stderr();
    let changes = stderr.matches("back-pressure stage").count();
    println!(
        "stages: slow tarpit {tarpit:?}; defer 452; refuse 421; normal again {recovered:?} after space \
         came back; {changes} stage changes logged"
    );
    assert!(changes >= 6, "every change is logged:\n{stderr}");
    drop(keel);
    drop(fs);
}
