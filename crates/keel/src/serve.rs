//! `keel serve`: start-up, the running daemon, and orderly shutdown.
//!
//! Start-up order matters for durability: the spool is opened (locked, recovered) before any
//! listener binds, and every recovered message is handed to the queue manager before new mail
//! is accepted. Shutdown runs the other way: listeners stop accepting, sessions finish the
//! message they are receiving (bounded), delivery workers finish their transaction (bounded),
//! then the spool is flushed and closed and the event log drained. The HTTP listener is up
//! from the start to the end of all this, so `/readyz` tells a load balancer "recovering",
//! "ready" and "draining" in turn.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use keel_config::Config;
use keel_spool::{Spool, SpoolOptions};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::delivery::{self, mx::Resolver};
use crate::envelope::Envelope;
use crate::ingress::smtp::{self, Ingress};
use crate::ingress::submit::Submitter;
use crate::metrics::Metrics;
use crate::queue::{self, QueueManager};
use crate::readiness::{Phase, Readiness};
use crate::{events, http};

/// How long shutdown waits for sessions and deliveries in progress.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

pub fn main(config: Option<PathBuf>) -> ExitCode {
    init_tracing();
    let cfg = match config {
        Some(path) => match Config::load(&path) {
            Ok(c) => c,
            Err(errors) => {
                eprintln!("{errors}");
                return ExitCode::from(2);
            }
        },
        None => Config::default(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("keel")
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("keel: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(Arc::new(cfg))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("keel: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEEL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

async fn run(cfg: Arc<Config>) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    crate::ingress::limits::raise_nofile_limit();
    // A key that cannot be loaded stops the daemon before it opens the spool or accepts mail.
    let dkim = keel_dkim::Signers::load(&cfg.dkim).context("loading the [[dkim]] signing keys")?;
    for k in dkim.keys() {
        tracing::info!(domain = %k.domain, selector = %k.selector, key = ?k.key_type, "DKIM key loaded");
    }

    // HTTP comes up first, so that `/readyz` answers "recovering" (503) while the spool is
    // recovered, and it stays up until the drain is over, answering "draining".
    let shutdown = CancellationToken::new();
    let http_shutdown = CancellationToken::new();
    let readiness = Arc::new(Readiness::default());
    let (queue_handle, queue_rx) = queue::channel();
    let http_listener = TcpListener::bind(cfg.http.listen)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", cfg.http.listen))?;
    tracing::info!(addr = %cfg.http.listen, "HTTP listening");
    // Fed by the event stream and read at scrape time; the spool and the SMTP connection slots
    // are handed to it once they exist.
    let metrics = Arc::new(Metrics::new(cfg.spool.dir.clone()));
    let submit_slot: crate::api_messages::SubmitSlot = Default::default();
    let tokens = Arc::new(arc_swap::ArcSwap::from_pointee(cfg.http.api_tokens.clone()));
    let (reload_tx, mut reload_rx) = tokio::sync::mpsc::channel(4);
    let http_state = http::AppState {
        queue: queue_handle.clone(),
        tokens: tokens.clone(),
        reload: reload_tx,
        readiness: readiness.clone(),
        metrics: metrics.clone(),
        submit: submit_slot.clone(),
        hostname: Arc::from(cfg.smtp.hostname.as_str()),
    };
    let http_task = tokio::spawn(http::serve(
        http_listener,
        http_state,
        http_shutdown.clone(),
    ));

    let spool_dir = cfg.spool.dir.clone();
    let (spool, recovered) =
        tokio::task::spawn_blocking(move || Spool::open(&spool_dir, SpoolOptions::default()))
            .await
            .context("spool recovery task")?
            .with_context(|| format!("opening the spool in {}", cfg.spool.dir.display()))?;

    metrics.set_spool(spool.clone());
    let observer: Arc<dyn events::Observer> = metrics.clone();
    let (events, events_thread) = events::start_log(&cfg.log, Some(observer))?;
    let tracker = TaskTracker::new();

    let resolver = Resolver::new(&cfg.dns.nameservers).context("setting up DNS resolution")?;
    let tls = match cfg.delivery.starttls {
        keel_config::StartTls::Opportunistic => Some(delivery::tls::opportunistic_client_config()),
        keel_config::StartTls::Disabled => None,
    };
    let delivery_ctx = Arc::new(delivery::Context {
        cfg: cfg.clone(),
        spool: spool.clone(),
        queue: queue_handle.clone(),
        resolver,
        tls,
        events: events.clone(),
        shutdown: shutdown.clone(),
        tracker: tracker.clone(),
    });
    let manager = QueueManager::new(
        cfg.clone(),
        spool.clone(),
        events.clone(),
        queue_rx,
        queue_handle.clone(),
        delivery_ctx,
        shutdown.clone(),
    );
    let manager_task = tokio::spawn(manager.run());

    let mut requeued = 0usize;
    for msg in recovered {
        match Envelope::decode(&msg.envelope) {
            Ok(env) => {
                queue_handle.enqueue(msg.id, env);
                requeued += 1;
            }
            Err(e) => tracing::error!(id = %queue::format_id(msg.id), error = %e,
                "a spooled message has an unreadable envelope; it is left in the spool"),
        }
    }
    tracing::info!(messages = requeued, "spool recovered");

    let smtp_slots = Arc::new(Semaphore::new(cfg.smtp.max_connections.max(1)));
    metrics.set_inbound(smtp_slots.clone(), cfg.smtp.max_connections.max(1));
    // Back-pressure: sampled from now on; sessions read the stage it publishes.
    let stage = crate::ingress::backpressure::Monitor {
        cfg: cfg.smtp.backpressure.clone(),
        spool: spool.clone(),
        spool_dir: cfg.spool.dir.clone(),
        readiness: readiness.clone(),
    }
    .start(shutdown.clone());
    let dkim = Arc::new(arc_swap::ArcSwap::from_pointee(dkim));
    let submitter = Submitter {
        spool: spool.clone(),
        queue: queue_handle.clone(),
        events: events.clone(),
        dkim: dkim.clone(),
    };
    let _ = submit_slot.set(submitter.clone());
    let ingress = Arc::new(Ingress {
        cfg: arc_swap::ArcSwap::new(cfg.clone()),
        server: Arc::new(smtp::server_config(&cfg)),
        shutdown: shutdown.clone(),
        tracker: tracker.clone(),
        connections: smtp_slots,
        access: smtp::Access::from_config(&cfg)?,
        submitter: submitter.clone(),
        stage,
    });
    let mut listeners = Vec::new();
    for addr in &cfg.smtp.listen {
        let l = smtp::bind(*addr).with_context(|| format!("cannot listen for SMTP on {addr}"))?;
        tracing::info!(%addr, "SMTP listening");
        listeners.push(tokio::spawn(smtp::serve(l, ingress.clone())));
    }
    for addr in &cfg.smtp.tls_listen {
        let l = smtp::bind(*addr)
            .with_context(|| format!("cannot listen for SMTP over TLS on {addr}"))?;
        tracing::info!(%addr, "SMTP (implicit TLS) listening");
        listeners.push(tokio::spawn(smtp::serve_implicit_tls(l, ingress.clone())));
    }
    readiness.set(Phase::Ready);

    let live = Live {
        cfg: cfg.clone(),
        tokens,
        dkim,
        ingress: ingress.clone(),
        queue: queue_handle.clone(),
    };
    serve_until_stopped(live, &mut reload_rx).await;
    tracing::info!("shutting down: no new connections; finishing messages in progress");
    readiness.set(Phase::Draining);
    shutdown.cancel();
    for l in listeners {
        let _ = l.await;
    }
    tracker.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "sessions or deliveries still running after {DRAIN_TIMEOUT:?}; they will be retried after restart"
        );
    }
    let _ = manager_task.await;
    http_shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), http_task).await;
    drop(ingress);
    let spool_close = spool.clone();
    tokio::task::spawn_blocking(move || spool_close.close())
        .await
        .context("spool close task")?
        .context("closing the spool")?;
    drop(queue_handle);
    drop(events);
    // The writer ends once the last sink is dropped; a session abandoned after the drain
    // timeout may still hold one, so do not wait for it forever.
    let join = tokio::task::spawn_blocking(move || {
        let _ = events_thread.join();
    });
    let _ = tokio::time::timeout(Duration::from_secs(5), join).await;
    tracing::info!("stopped");
    Ok(())
}

/// What a reload swaps: the parts of the running daemon that take a new configuration
/// without restarting (listeners, spool and log locations, TLS and users need a restart).
struct Live {
    cfg: Arc<Config>,
    tokens: Arc<arc_swap::ArcSwap<Vec<String>>>,
    dkim: Arc<arc_swap::ArcSwap<keel_dkim::Signers>>,
    ingress: Arc<Ingress>,
    queue: queue::QueueHandle,
}

type ReloadRequest = tokio::sync::oneshot::Sender<Result<String, String>>;

/// Runs until SIGTERM or Ctrl-C, reloading on SIGHUP and on `POST /api/v1/reload`.
async fn serve_until_stopped(
    mut live: Live,
    requests: &mut tokio::sync::mpsc::Receiver<ReloadRequest>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut hup) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(t), Ok(h)) => (t, h),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "cannot watch SIGTERM/SIGHUP");
            return std::future::pending().await;
        }
    };
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = tokio::signal::ctrl_c() => return,
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the configuration");
                let _ = reload(&mut live).await;
            }
            Some(reply) = requests.recv() => {
                let _ = reply.send(reload(&mut live).await);
            }
        }
    }
}

/// Re-reads the configuration file; on any error the running configuration stays in force.
/// On success the new one is swapped in atomically, part by part: shaping limits and reply
/// rules, routes, retry schedule, egress pools (queue manager and ready queues), DKIM keys,
/// API tokens, relay networks and SMTP timeouts. No session or queued message is dropped.
async fn reload(live: &mut Live) -> Result<String, String> {
    let result = reload_inner(live).await;
    match &result {
        Ok(summary) => tracing::info!(%summary, "configuration reloaded"),
        Err(e) => {
            tracing::error!(error = %e, "configuration not reloaded; the running one stays in force")
        }
    }
    result
}

async fn reload_inner(live: &mut Live) -> Result<String, String> {
    let Some(path) = live.cfg.source.clone() else {
        return Err("Keel was started without --config: there is no file to reload".into());
    };
    let load_path = path.clone();
    let new = tokio::task::spawn_blocking(move || Config::load(&load_path))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|errors| errors.to_string())?;
    let keys = new.dkim.clone();
    let signers = tokio::task::spawn_blocking(move || keel_dkim::Signers::load(&keys))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("{}: [[dkim]]: {e}", path.display()))?;
    let new = Arc::new(new);
    let old = &live.cfg;
    let mut restart = Vec::new();
    if new.smtp.listen != old.smtp.listen || new.smtp.tls_listen != old.smtp.tls_listen {
        restart.push("smtp.listen/tls_listen");
    }
    if new.http.listen != old.http.listen {
        restart.push("http.listen");
    }
    if new.spool.dir != old.spool.dir {
        restart.push("spool.dir");
    }
    if new.log != old.log {
        restart.push("[log]");
    }
    if new.smtp.tls != old.smtp.tls || new.smtp.users != old.smtp.users {
        restart.push("smtp TLS/users");
    }
    live.queue
        .ask(|reply| queue::Command::Reload {
            cfg: new.clone(),
            reply,
        })
        .await
        .ok_or("the queue manager is shutting down")?;
    live.dkim.store(Arc::new(signers));
    live.tokens.store(Arc::new(new.http.api_tokens.clone()));
    live.ingress.cfg.store(new.clone());
    live.cfg = new;
    let mut summary = format!("reloaded {}", path.display());
    if !restart.is_empty() {
        summary.push_str(&format!(
            "; changes to {} take effect after a restart",
            restart.join(", ")
        ));
    }
    Ok(summary)
}
