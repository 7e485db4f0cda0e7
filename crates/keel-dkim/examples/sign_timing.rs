//! Signing cost, without criterion: `cargo run --release -p keel-dkim --example sign_timing`.
//!
//! Prints nanoseconds per `Signers::sign` call for 10 KB and 100 KB messages with an RSA-2048
//! and an Ed25519 key (both from `keygen`), and the key generation times. Each figure is the
//! median of 5 rounds; a round signs the same message repeatedly for about 300 ms.

use std::hint::black_box;
use std::time::{Duration, Instant};

use keel_dkim::{Algorithm, DkimKeyConfig, Signers, keygen};

fn message(size: usize) -> Vec<u8> {
    let mut m = b"From: Acme News <news@acme.example>\r\n\
To: alice@example.net\r\n\
Subject: Your weekly digest\r\n\
Date: Tue, 14 Apr 2026 10:00:00 +0000\r\n\
Message-ID: <digest-1@acme.example>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
List-Unsubscribe: <https://acme.example/u/abc>\r\n\
List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\
\r\n"
        .to_vec();
    let line =
        b"Lorem ipsum dolor sit amet,  consectetur adipiscing elit, sed do eiusmod tempor.\r\n";
    while m.len() + line.len() <= size {
        m.extend_from_slice(line);
    }
    m
}

fn ns_per_sign(signers: &Signers, msg: &[u8]) -> f64 {
    let mut rounds = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let mut n = 0u32;
        while start.elapsed() < Duration::from_millis(300) {
            black_box(signers.sign(black_box(msg)).expect("sign").expect("key"));
            n += 1;
        }
        rounds.push(start.elapsed().as_nanos() as f64 / f64::from(n));
    }
    rounds.sort_by(f64::total_cmp);
    rounds[2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("keel-dkim-timing-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    println!(
        "profile: {}",
        if cfg!(debug_assertions) {
            "debug (use --release)"
        } else {
            "release"
        }
    );
    for (name, algorithm) in [
        ("RSA-2048", Algorithm::Rsa2048),
        ("Ed25519", Algorithm::Ed25519),
    ] {
        let start = Instant::now();
        let key = keygen(algorithm, "acme.example", "s1")?;
        println!(
            "{name}: keygen {:.1} ms",
            start.elapsed().as_secs_f64() * 1e3
        );
        let path = dir.join(format!("{name}.pem"));
        std::fs::write(&path, &key.pem)?;
        let signers = Signers::load(&[DkimKeyConfig {
            domain: "acme.example".into(),
            selector: "s1".into(),
            key_path: path,
        }])?;
        print!("{}", signers.sign(&message(2048))?.unwrap_or_default());
        for size in [10 * 1024, 100 * 1024] {
            let msg = message(size);
            let ns = ns_per_sign(&signers, &msg);
            println!(
                "{name}: {:>3} KB message: {:>9.0} ns/sign ({:.0} signs/s on one core)",
                size / 1024,
                ns,
                1e9 / ns
            );
        }
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
