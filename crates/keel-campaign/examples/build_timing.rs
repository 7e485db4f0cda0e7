//! What one campaign message costs: render (minijinja) + build (mail-builder), then the same
//! plus RSA-2048 and Ed25519 DKIM signing (keel-dkim), for a 10 KB and a 100 KB HTML template
//! with three variables per recipient (and a short text part).
//!
//! ```sh
//! cargo run --release -p keel-campaign --example build_timing
//! ```
//!
//! Single-threaded figures; the daemon spreads this work over its cores.

use std::time::{Instant, SystemTime};

use keel_campaign::{
    BuildSettings, CampaignRequest, MessageFactory, Recipient, RequestLimits, TokenKey,
    Unsubscribe, Verp,
};
use keel_dkim::{Algorithm, DkimKeyConfig, Signers, keygen};

/// An HTML template of about `kb` KB: paragraphs of ~100-character lines, a variable every
/// ~2 KB, a table row loop-free (the common newsletter shape).
fn html_template(kb: usize) -> String {
    let line = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore.";
    let mut out = String::from(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Offer</title></head><body>\n<h1>Hello {{ first_name }}</h1>\n",
    );
    let mut i = 0;
    while out.len() < kb * 1024 {
        out.push_str(
            "<p style=\"font-family: Arial, sans-serif; font-size: 14px; color: #333333;\">",
        );
        out.push_str(line);
        out.push_str("</p>\n");
        i += 1;
        if i % 16 == 0 {
            out.push_str("<p>Your code: <b>{{ code }}</b> — valid in {{ city }}.</p>\n");
        }
    }
    out.push_str("</body></html>\n");
    out
}

fn main() {
    let key = TokenKey::new(b"timing secret, sixteen bytes or more").expect("key");
    let settings = BuildSettings {
        hostname: "mta.keel.test".into(),
        verp: Some(Verp::new(key.clone(), "bounces.acme.example")),
        unsubscribe: Some(
            Unsubscribe::new(key, "https://t.acme.example", Some("bounces.acme.example"))
                .expect("url"),
        ),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut signers = Vec::new();
    for (name, algorithm) in [("rsa", Algorithm::Rsa2048), ("ed25519", Algorithm::Ed25519)] {
        let k = keygen(algorithm, "acme.example", "s1").expect("keygen");
        let path = dir.path().join(format!("{name}.pem"));
        std::fs::write(&path, &k.pem).expect("write key");
        let s = Signers::load(&[DkimKeyConfig {
            domain: "acme.example".into(),
            selector: "s1".into(),
            key_path: path,
        }])
        .expect("load key");
        signers.push((name, s));
    }

    println!("| template | message size | render+build | + DKIM RSA-2048 | + DKIM Ed25519 |");
    println!("|---|---|---|---|---|");
    for (kb, n) in [(10usize, 4000u64), (100, 600)] {
        let request = serde_json::json!({
            "campaign": "timing",
            "from": {"email": "news@acme.example", "name": "ACME"},
            "subject": "Hi {{ first_name }}, your offer for {{ city }}",
            "text": "Hello {{ first_name }},\nyour code is {{ code }} ({{ city }}).\n",
            "html": html_template(kb),
        });
        let validated = CampaignRequest::from_json(request.to_string().as_bytes())
            .expect("request")
            .validate(&RequestLimits::default())
            .expect("valid");
        let factory = MessageFactory::new(&validated.campaign, &settings);
        let recipients: Vec<Recipient> = (0..n)
            .map(|i| Recipient {
                index: i,
                email: format!("user{i}@x{}.example", i % 50),
                vars: serde_json::json!({"first_name": format!("Name{i}"), "city": "Köln", "code": format!("C{i:06}")})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            })
            .collect();
        let now = SystemTime::now();

        let started = Instant::now();
        let mut size = 0usize;
        for r in &recipients {
            size = factory.build(r, now).expect("build").bytes.len();
        }
        let build_us = started.elapsed().as_secs_f64() * 1e6 / n as f64;

        let mut signed_us = Vec::new();
        for (_, s) in &signers {
            let started = Instant::now();
            for r in &recipients {
                let m = factory.build(r, now).expect("build");
                let header = s.sign(&m.bytes).expect("sign").expect("key matches");
                std::hint::black_box((header, m));
            }
            signed_us.push(started.elapsed().as_secs_f64() * 1e6 / n as f64);
        }
        println!(
            "| {kb} KB HTML | {:.1} KB | {build_us:.0} µs ({:.0}/s) | {:.0} µs ({:.0}/s) | {:.0} µs ({:.0}/s) |",
            size as f64 / 1024.0,
            1e6 / build_us,
            signed_us[0],
            1e6 / signed_us[0],
            signed_us[1],
            1e6 / signed_us[1],
        );
    }
}
