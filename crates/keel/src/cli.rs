//! The operator's subcommands that talk to a running daemon over its admin API:
//! `keel queue`, `keel suspend`, `keel resume`, `keel bounce`.
//!
//! Where to connect: `--api URL` (or `KEEL_API`), else the `[http] listen` address of
//! `--config FILE`, else `http://127.0.0.1:8025`. The token: `--token` (or `KEEL_API_TOKEN`),
//! else the first `[http] api_tokens` entry of `--config FILE`. Tables for people, `--json`
//! for scripts.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use serde_json::{Value, json};

/// How to reach the daemon.
#[derive(Args, Debug, Clone)]
pub struct Api {
    /// Base URL of the admin API.
    #[arg(long, env = "KEEL_API", global = true)]
    pub api: Option<String>,
    /// Bearer token for the admin API.
    #[arg(long, env = "KEEL_API_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// Read the API address and token from this configuration file.
    #[arg(long, short, global = true)]
    pub config: Option<PathBuf>,
    /// Print the raw JSON answer instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// Which queues an operation applies to: exactly one.
#[derive(Args, Debug, Clone)]
#[group(required = true, multiple = false)]
pub struct Target {
    /// A destination domain (scheduled queue).
    #[arg(long)]
    pub domain: Option<String>,
    /// A site (MX host set, as `keel queue` shows it).
    #[arg(long)]
    pub site: Option<String>,
    /// An egress source.
    #[arg(long)]
    pub source: Option<String>,
    /// A campaign id.
    #[arg(long)]
    pub campaign: Option<String>,
    /// A tenant.
    #[arg(long)]
    pub tenant: Option<String>,
}

impl Target {
    fn json(&self) -> Value {
        let mut v = json!({});
        for (k, val) in [
            ("domain", &self.domain),
            ("site", &self.site),
            ("source", &self.source),
            ("campaign", &self.campaign),
            ("tenant", &self.tenant),
        ] {
            if let Some(x) = val {
                v[k] = json!(x);
            }
        }
        v
    }
}

pub(crate) struct Client {
    pub(crate) base: String,
    pub(crate) token: Option<String>,
    pub(crate) http: reqwest::Client,
}

impl Client {
    pub(crate) fn new(api: &Api) -> Result<Client, String> {
        let cfg = match &api.config {
            Some(p) => Some(keel_config::Config::load(p).map_err(|e| e.to_string())?),
            None => None,
        };
        let base = match (&api.api, &cfg) {
            (Some(u), _) => u.trim_end_matches('/').to_string(),
            (None, Some(c)) => {
                let mut addr = c.http.listen;
                if addr.ip().is_unspecified() {
                    addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                format!("http://{addr}")
            }
            (None, None) => "http://127.0.0.1:8025".into(),
        };
        let token = api
            .token
            .clone()
            .or_else(|| cfg.and_then(|c| c.http.api_tokens.first().cloned()));
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Client { base, token, http })
    }

    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("cannot reach the Keel admin API at {url}: {e}"))?;
        let status = resp.status();
        let value: Value = resp
            .json()
            .await
            .map_err(|e| format!("{url} answered {status} without JSON: {e}"))?;
        if !status.is_success() {
            let msg = value["error"].as_str().unwrap_or("error");
            return Err(match value["field"].as_str() {
                Some(f) => format!("{status}: {msg} (field: {f})"),
                None => format!("{status}: {msg}"),
            });
        }
        Ok(value)
    }
}

/// Runs an async CLI action on a small runtime and turns errors into exit code 1.
pub(crate) fn run(f: impl std::future::Future<Output = Result<(), String>>) -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keel: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(f) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keel: {e}");
            ExitCode::FAILURE
        }
    }
}

pub(crate) fn age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

pub(crate) fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(x) => x.clone(),
        other => other.to_string(),
    }
}

/// `keel queue`.
pub fn queue(api: Api, limit: usize) -> ExitCode {
    run(async move {
        let c = Client::new(&api)?;
        let v = c
            .call(
                reqwest::Method::GET,
                &format!("/api/v1/queues?limit={limit}"),
                None,
            )
            .await?;
        if api.json {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            return Ok(());
        }
        println!(
            "{} messages, {} recipients, {} bytes queued",
            s(&v["messages"]),
            s(&v["recipients"]),
            s(&v["bytes"])
        );
        let mut t = Table::new();
        t.load_style(UTF8_FULL_CONDENSED).set_header(vec![
            "domain",
            "msgs",
            "rcpts",
            "oldest",
            "next try",
            "parked",
            "site",
            "last response",
        ]);
        for q in v["scheduled"].as_array().into_iter().flatten() {
            let last = &q["last_response"];
            let last = if last.is_null() {
                "-".into()
            } else {
                format!(
                    "{} {} {}",
                    s(&last["code"]),
                    s(&last["enhanced"]),
                    s(&last["text"])
                )
            };
            t.add_row(vec![
                s(&q["domain"]),
                s(&q["messages"]),
                s(&q["recipients"]),
                age(q["oldest_age_s"].as_u64().unwrap_or(0)),
                q["next_attempt_in_s"]
                    .as_u64()
                    .map_or("-".into(), |n| format!("in {}", age(n))),
                s(&q["parked"]),
                s(&q["site"]),
                last,
            ]);
        }
        println!(
            "Scheduled queues ({} of {})\n{t}",
            v["scheduled"].as_array().map_or(0, Vec::len),
            s(&v["scheduled_queues"])
        );
        let mut t = Table::new();
        t.load_style(UTF8_FULL_CONDENSED).set_header(vec![
            "source",
            "site",
            "queued",
            "in flight",
            "conns/max",
            "msgs/conn",
            "rate",
            "conn rate",
        ]);
        for q in v["ready"].as_array().into_iter().flatten() {
            t.add_row(vec![
                s(&q["source"]),
                s(&q["site"]),
                s(&q["queued"]),
                s(&q["outstanding"]),
                format!("{}/{}", s(&q["connections"]), s(&q["max_connections"])),
                s(&q["max_messages_per_connection"]),
                s(&q["max_message_rate"]),
                s(&q["max_connection_rate"]),
            ]);
        }
        println!(
            "Ready queues ({} of {})\n{t}",
            v["ready"].as_array().map_or(0, Vec::len),
            s(&v["ready_queues"])
        );
        let sus = v["suspensions"].as_array().cloned().unwrap_or_default();
        if !sus.is_empty() {
            let mut t = Table::new();
            t.load_style(UTF8_FULL_CONDENSED)
                .set_header(vec!["suspended", "until", "reason"]);
            for x in sus {
                let what = ["domain", "site", "source", "campaign", "tenant"]
                    .iter()
                    .find_map(|k| x[*k].as_str().map(|val| format!("{k}={val}")))
                    .unwrap_or_default();
                t.add_row(vec![what, s(&x["until"]), s(&x["reason"])]);
            }
            println!("Suspensions\n{t}");
        }
        Ok(())
    })
}

/// `keel suspend`.
pub fn suspend(
    api: Api,
    target: Target,
    duration: Option<String>,
    reason: Option<String>,
) -> ExitCode {
    run(async move {
        let c = Client::new(&api)?;
        let mut body = target.json();
        if let Some(d) = duration {
            body["duration"] = json!(d);
        }
        if let Some(r) = reason {
            body["reason"] = json!(r);
        }
        let v = c
            .call(reqwest::Method::POST, "/api/v1/suspend", Some(body))
            .await?;
        if api.json {
            println!("{v}");
        } else {
            println!(
                "suspended {} until {}: {}",
                target.json(),
                v["until"].as_str().unwrap_or("resumed"),
                s(&v["reason"])
            );
        }
        Ok(())
    })
}

/// `keel resume`.
pub fn resume(api: Api, target: Target) -> ExitCode {
    run(async move {
        let c = Client::new(&api)?;
        let v = c
            .call(reqwest::Method::POST, "/api/v1/resume", Some(target.json()))
            .await?;
        if api.json {
            println!("{v}");
        } else {
            println!("resumed {}", target.json());
        }
        Ok(())
    })
}

/// `keel bounce`.
pub fn bounce(api: Api, target: Target, dry_run: bool, reason: Option<String>) -> ExitCode {
    run(async move {
        let c = Client::new(&api)?;
        let mut body = target.json();
        body["dry_run"] = json!(dry_run);
        if let Some(r) = reason {
            body["reason"] = json!(r);
        }
        let v = c
            .call(reqwest::Method::POST, "/api/v1/bounce", Some(body))
            .await?;
        if api.json {
            println!("{v}");
        } else if dry_run {
            println!(
                "would bounce {} recipients in {} messages (dry run)",
                s(&v["recipients"]),
                s(&v["messages"])
            );
        } else {
            println!(
                "bounced {} recipients in {} messages",
                s(&v["recipients"]),
                s(&v["messages"])
            );
        }
        Ok(())
    })
}

/// `keel reload`: the daemon re-reads its configuration file (like SIGHUP).
pub fn reload(api: Api) -> ExitCode {
    run(async move {
        let c = Client::new(&api)?;
        let v = c
            .call(reqwest::Method::POST, "/api/v1/reload", None)
            .await?;
        if api.json {
            println!("{v}");
        } else {
            println!("{}", s(&v["summary"]));
        }
        Ok(())
    })
}
