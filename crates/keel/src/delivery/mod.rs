//! Delivery: one ready queue per (egress source, site), and the connection workers it runs.
//!
//! The ready queue task owns its due jobs, its connection count and its shaping state. It
//! starts a worker (one outbound connection, bound to the egress source's address) when jobs
//! wait, fewer than the site's `max_connections` are open and the connection rate allows; it
//! hands a job to a worker only when the message rate allows. A worker that finished a
//! transaction asks for the next job and reuses its connection, up to
//! `max_messages_per_connection`, then says QUIT. An idle worker waits `idle_timeout` for more
//! work before closing. The limits are exact: a site never sees more connections from one
//! source than its `max_connections`.
//!
//! When a destination cannot be reached at all (DNS failure, every MX refusing), the worker
//! reports it and the task fails every job it holds the same way, and for a short while fails
//! new arrivals at once instead of opening connections that will fail: a dead destination
//! costs one connection attempt per back-off period, not one per message.
//!
//! Workers report outcomes straight to the queue manager.

pub mod client;
pub mod mx;
pub mod rate;
pub mod site;
pub mod tls;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use keel_config::{Config, EgressSource, Limits};
use keel_spool::Spool;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::events::Response;
use crate::queue::fair::FairQueue;
use crate::queue::{Job, Outcome, QueueHandle, RcptResult, Status};
use client::{ClientError, Connection, Outgoing, Timeouts};
use mx::Resolver;
use rate::Limiter;

/// How often a destination checks its waiting jobs for expiry.
const EXPIRY_CHECK: Duration = Duration::from_secs(5);

/// What every destination and worker shares.
pub struct Context {
    pub cfg: Arc<Config>,
    pub spool: Spool,
    pub queue: QueueHandle,
    pub resolver: Resolver,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub events: crate::events::EventSink,
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
}

/// Messages to a destination task.
pub enum DestMsg {
    /// A due job.
    Job(Job),
    /// A worker is free for another job on its open connection.
    Next(oneshot::Sender<Job>),
    /// A worker could not reach the destination at all.
    Unreachable {
        job: Job,
        status: Status,
        response: Response,
        site: String,
    },
    /// A worker closed its connection.
    WorkerExit,
    /// Hand back every waiting job this matches (suspension, administrative bounce).
    Recall(Box<dyn Fn(&Job) -> bool + Send>),
    /// A reply rule limits this queue to `rate` until `until`.
    Throttle {
        rate: keel_config::Rate,
        until: Instant,
    },
    /// How a transaction went, for adaptive shaping.
    Feedback(Feedback),
    /// New limits after a configuration reload.
    Limits(Limits),
}

/// What a finished transaction (or connection attempt) says about the site's mood.
#[derive(Debug, Clone)]
pub enum Feedback {
    /// The site accepted mail.
    Accepted,
    /// The site pushed back: a throttling reply or a refused connection.
    Throttled(Response),
    /// Nothing to learn (e.g. an unknown user).
    Neutral,
}

/// Whether a failure looks like the site slowing us down rather than refusing a recipient.
fn is_throttling(r: &Response) -> bool {
    if r.code == 421 || r.enhanced.starts_with("4.7.") {
        return true;
    }
    if r.code == 0 {
        // Local conditions: a refused or timed-out connection is the site pushing back.
        let t = r.text.to_ascii_lowercase();
        return t.contains("refused") || t.contains("timed out") || t.contains("reset");
    }
    if r.code / 100 != 4 {
        return false;
    }
    let t = r.text.to_ascii_lowercase();
    [
        "too many",
        "rate limit",
        "throttl",
        "try again later",
        "temporarily deferred",
        "exceeded",
    ]
    .iter()
    .any(|p| t.contains(p))
}

/// Adaptive shaping (AIMD) state of one ready queue: the concurrency in force, cut in half
/// on a throttling signal (at most once per `CUT_SPACING`), raised by one per
/// `RAISE_EVERY` accepted transactions, never above the configured maximum.
#[derive(Debug)]
struct Adaptive {
    enabled: bool,
    max: usize,
    current: usize,
    last_cut: Option<Instant>,
    accepted_since_change: u32,
}

const CUT_SPACING: Duration = Duration::from_secs(10);
const RAISE_EVERY: u32 = 20;

impl Adaptive {
    fn new(enabled: bool, max: usize) -> Self {
        Adaptive {
            enabled,
            max: max.max(1),
            current: max.max(1),
            last_cut: None,
            accepted_since_change: 0,
        }
    }

    /// Returns the new concurrency if it changed.
    fn throttled(&mut self, now: Instant) -> Option<usize> {
        if !self.enabled
            || self
                .last_cut
                .is_some_and(|t| now.duration_since(t) < CUT_SPACING)
        {
            return None;
        }
        self.last_cut = Some(now);
        self.accepted_since_change = 0;
        let next = (self.current / 2).max(1);
        (next != self.current).then(|| {
            self.current = next;
            next
        })
    }

    /// Returns the new concurrency if it changed.
    fn accepted(&mut self) -> Option<usize> {
        if !self.enabled || self.current >= self.max {
            return None;
        }
        self.accepted_since_change += 1;
        if self.accepted_since_change < RAISE_EVERY {
            return None;
        }
        self.accepted_since_change = 0;
        self.current += 1;
        Some(self.current)
    }
}

/// Counters a ready queue publishes for the queue summary (read without asking the task).
#[derive(Debug, Default)]
pub struct ReadyStats {
    queued: AtomicUsize,
    connections: AtomicUsize,
    effective_max_connections: AtomicUsize,
    /// The reply-rule throttle in force, if any (e.g. "300/h until 12:00:00Z").
    throttle: std::sync::Mutex<Option<String>>,
}

impl ReadyStats {
    pub fn effective_max_connections(&self) -> usize {
        self.effective_max_connections.load(Ordering::Relaxed)
    }

    pub fn throttle(&self) -> Option<String> {
        self.throttle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }
}

/// Starts the ready queue for (`source`, `site`) with `limits`; it ends when every sender is
/// dropped.
pub fn spawn_ready_queue(
    source: EgressSource,
    limits: Limits,
    stats: Arc<ReadyStats>,
    ctx: Arc<Context>,
) -> mpsc::UnboundedSender<DestMsg> {
    let (tx, rx) = mpsc::unbounded_channel();
    stats
        .effective_max_connections
        .store(limits.max_connections, Ordering::Relaxed);
    let dest = DestinationTask {
        adaptive: Adaptive::new(ctx.cfg.shaping.adaptive, limits.max_connections),
        throttle: None,
        last_job: None,
        stats,
        source: Arc::new(source),
        msg_limiter: rate::optional(limits.max_message_rate, 1),
        conn_limiter: rate::optional(limits.max_connection_rate, 1),
        limits,
        ctx: ctx.clone(),
        rx,
        self_tx: tx.downgrade(),
        queue: FairQueue::default(),
        idle: Vec::new(),
        workers: 0,
        dead_until: None,
        wake_at: None,
    };
    ctx.tracker.spawn(dest.run());
    tx
}

struct DestinationTask {
    adaptive: Adaptive,
    /// A reply rule's rate limit, until its end.
    throttle: Option<(Limiter, Instant)>,
    /// Domain and site of the last job seen, to name this queue in events.
    last_job: Option<(String, Arc<str>, Arc<str>)>,
    stats: Arc<ReadyStats>,
    source: Arc<EgressSource>,
    limits: Limits,
    msg_limiter: Option<Limiter>,
    conn_limiter: Option<Limiter>,
    /// When a rate limit next allows a job to go out.
    wake_at: Option<Instant>,
    ctx: Arc<Context>,
    rx: mpsc::UnboundedReceiver<DestMsg>,
    /// Weak, so the task ends when the queue manager and all workers let go.
    self_tx: mpsc::WeakUnboundedSender<DestMsg>,
    /// Due jobs, fair between traffic classes (campaign, tenant).
    queue: FairQueue,
    /// Workers waiting for a job.
    idle: Vec<oneshot::Sender<Job>>,
    workers: usize,
    /// While set, the destination is known unreachable: fail jobs at once with this.
    dead_until: Option<(Instant, Status, Response, String)>,
}

impl DestinationTask {
    async fn run(mut self) {
        // Jobs can wait here for a connection slot (a slow receiver holding every connection);
        // their expiry is checked on this tick too, not only when a worker picks them up.
        let mut expiry = tokio::time::interval(EXPIRY_CHECK);
        expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let wake_at = self.wake_at;
            let msg = tokio::select! {
                m = self.rx.recv() => m,
                _ = expiry.tick(), if !self.queue.is_empty() => {
                    self.expire_waiting();
                    continue;
                }
                _ = sleep_until(wake_at), if wake_at.is_some() => {
                    self.wake_at = None;
                    self.pump();
                    continue;
                }
            };
            let Some(msg) = msg else { break };
            match msg {
                DestMsg::Job(job) => {
                    if self.last_job.is_none() {
                        self.last_job = Some((
                            job.domain.clone(),
                            job.site
                                .as_ref()
                                .map_or_else(|| Arc::from(""), |s| s.key.clone()),
                            job.source.clone(),
                        ));
                    }
                    self.queue.push_back(job)
                }
                DestMsg::Throttle { rate, until } => {
                    self.throttle = Some((Limiter::new(rate, 1), until));
                    *self
                        .stats
                        .throttle
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(format!(
                        "{rate} for {}s",
                        until.saturating_duration_since(Instant::now()).as_secs()
                    ));
                }
                DestMsg::Feedback(f) => self.feedback(f),
                DestMsg::Limits(limits) => {
                    // New limits apply from the next job; connections beyond a lowered cap close
                    // as they finish their transaction.
                    self.limits = limits;
                    self.msg_limiter = rate::optional(limits.max_message_rate, 1);
                    self.conn_limiter = rate::optional(limits.max_connection_rate, 1);
                    // Not cut back by adaptive shaping: follow the new maximum at once; cut back:
                    // keep recovering from where it is, within the new maximum.
                    let at_max = self.adaptive.current >= self.adaptive.max;
                    self.adaptive.max = limits.max_connections.max(1);
                    self.adaptive.current = if at_max || !self.adaptive.enabled {
                        self.adaptive.max
                    } else {
                        self.adaptive.current.min(self.adaptive.max)
                    };
                    self.stats
                        .effective_max_connections
                        .store(self.adaptive.current, Ordering::Relaxed);
                }
                DestMsg::Next(reply) => self.idle.push(reply),
                DestMsg::WorkerExit => self.workers = self.workers.saturating_sub(1),
                DestMsg::Recall(pred) => {
                    let back = self.queue.take_where(|j| pred(j));
                    if !back.is_empty() {
                        self.ctx.queue.recalled(back);
                    }
                }
                DestMsg::Unreachable {
                    job,
                    status,
                    response,
                    site,
                } => {
                    let hold = self
                        .ctx
                        .cfg
                        .retry
                        .intervals
                        .first()
                        .copied()
                        .unwrap_or(Duration::from_secs(60))
                        .min(Duration::from_secs(60));
                    self.dead_until = Some((
                        Instant::now() + hold,
                        status,
                        response.clone(),
                        site.clone(),
                    ));
                    if is_throttling(&response) {
                        self.feedback(Feedback::Throttled(response.clone()));
                    }
                    self.fail(job, status, response, site);
                }
            }
            self.pump();
            self.stats.queued.store(self.queue.len(), Ordering::Relaxed);
            self.stats
                .connections
                .store(self.workers, Ordering::Relaxed);
        }
    }

    /// Reports every waiting job whose message passed `max_age` as expired.
    fn expire_waiting(&mut self) {
        let now = Instant::now();
        let expired = self.queue.take_where(|j| now >= j.expires_at);
        for job in expired {
            let r = Response {
                code: 0,
                enhanced: "4.4.7".into(),
                text: "message expired while waiting for a connection".into(),
            };
            self.fail(job, Status::Expired, r, String::new());
        }
    }

    /// Applies adaptive shaping to a transaction's outcome.
    fn feedback(&mut self, f: Feedback) {
        let now = Instant::now();
        let (changed, why) = match &f {
            Feedback::Accepted => (self.adaptive.accepted(), None),
            Feedback::Throttled(r) => (self.adaptive.throttled(now), Some(r.clone())),
            Feedback::Neutral => (None, None),
        };
        let Some(current) = changed else { return };
        self.stats
            .effective_max_connections
            .store(current, Ordering::Relaxed);
        // A configured message rate follows the concurrency in the same proportion.
        let rate_note = match self.limits.max_message_rate {
            Some(r) => {
                let scaled = keel_config::Rate {
                    count: ((u64::from(r.count) * current as u64) / self.adaptive.max as u64).max(1)
                        as u32,
                    per: r.per,
                };
                self.msg_limiter = Some(Limiter::new(scaled, 1));
                format!(" and the message rate to {scaled}")
            }
            None => String::new(),
        };
        let (domain, site, source) = self
            .last_job
            .clone()
            .unwrap_or_else(|| (String::new(), Arc::from(""), Arc::from("")));
        let action = match &why {
            Some(_) => format!(
                "adaptive: cut connections to {current} of {}{rate_note} after a throttling signal",
                self.adaptive.max
            ),
            None => format!(
                "adaptive: raise connections to {current} of {}{rate_note} while the site accepts mail",
                self.adaptive.max
            ),
        };
        tracing::info!(%site, %source, %action, "shaping");
        self.ctx.events.emit(crate::events::Event {
            kind: crate::events::Kind::ShapingAction,
            time: crate::events::rfc3339(std::time::SystemTime::now()),
            id: String::new(),
            sender: String::new(),
            recipient: String::new(),
            size: 0,
            queue: domain,
            site: site.to_string(),
            source: source.to_string(),
            attempt: 0,
            response: why,
            peer: String::new(),
            queue_time_ms: 0,
            action: Some(action),
        });
    }

    fn wake(&mut self, at: Instant) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }

    fn fail(&self, job: Job, status: Status, response: Response, site: String) {
        self.ctx
            .queue
            .report(Outcome::all(job, status, response, site, String::new()));
    }

    /// Hands queued jobs to idle workers, or starts workers, within the connection limit.
    fn pump(&mut self) {
        if let Some((until, status, response, site)) = &self.dead_until {
            if Instant::now() < *until {
                while let Some(job) = self.queue.pop_front() {
                    self.fail(job, *status, response.clone(), site.clone());
                }
                return;
            }
            self.dead_until = None;
        }
        if self.ctx.shutdown.is_cancelled() {
            self.queue.drain_all();
            self.idle.clear();
            return;
        }
        let max = self.adaptive.current.max(1);
        let now = Instant::now();
        self.idle.retain(|w| !w.is_closed());
        // Adaptive shaping lowered the limit: let surplus idle connections go.
        let mut surplus = self.workers.saturating_sub(max);
        while surplus > 0 && self.idle.pop().is_some() {
            surplus -= 1;
        }
        if self
            .throttle
            .as_ref()
            .is_some_and(|(_, until)| now >= *until)
        {
            self.throttle = None;
            *self
                .stats
                .throttle
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        }
        while !self.queue.is_empty() {
            // A slot first: an idle connection, or room (and connection rate) for a new one.
            let reuse = !self.idle.is_empty();
            if !reuse {
                if self.workers >= max {
                    break;
                }
                if let Some(Err(at)) = self.conn_limiter.as_ref().map(|l| l.check(now)) {
                    self.wake(at);
                    break;
                }
            }
            // Then the message rates: the configured one and a reply rule's throttle.
            let throttle_wait = self.throttle.as_ref().and_then(|(l, _)| l.check(now).err());
            let msg_wait = self.msg_limiter.as_ref().and_then(|l| l.check(now).err());
            if let Some(at) = throttle_wait.into_iter().chain(msg_wait).max() {
                self.wake(at);
                break;
            }
            if let Some((l, _)) = self.throttle.as_mut() {
                let _ = l.try_acquire(now);
            }
            if let Some(l) = self.msg_limiter.as_mut() {
                let _ = l.try_acquire(now);
            }
            let Some(job) = self.queue.pop_front() else {
                break;
            };
            let mut job = Some(job);
            if reuse {
                while let Some(j) = job.take() {
                    let Some(worker) = self.idle.pop() else {
                        job = Some(j);
                        break;
                    };
                    // Err: that worker timed out meanwhile; try the next.
                    if let Err(j) = worker.send(j) {
                        job = Some(j);
                    }
                }
            }
            let Some(job) = job else { continue };
            if reuse && self.workers >= max {
                self.queue.push_front(job);
                break;
            }
            let Some(tx) = self.self_tx.upgrade() else {
                self.queue.push_front(job);
                break;
            };
            if let Some(l) = self.conn_limiter.as_mut() {
                let _ = l.try_acquire(now);
            }
            self.workers += 1;
            let worker = Worker {
                source: self.source.clone(),
                limits: self.limits,
                ctx: self.ctx.clone(),
                dest: tx,
            };
            self.ctx.tracker.spawn(worker.run(job));
        }
    }
}

/// One outbound connection and the jobs it carries.
struct Worker {
    source: Arc<EgressSource>,
    limits: Limits,
    ctx: Arc<Context>,
    dest: mpsc::UnboundedSender<DestMsg>,
}

impl Worker {
    async fn run(self, first: Job) {
        let (conn, site) = match self.open(&first).await {
            Ok(c) => c,
            Err((status, response, site)) => {
                let _ = self.dest.send(DestMsg::Unreachable {
                    job: first,
                    status,
                    response,
                    site,
                });
                let _ = self.dest.send(DestMsg::WorkerExit);
                return;
            }
        };
        let mut conn = conn;
        let mut job = first;
        let mut sent = 0usize;
        let cfg = &self.ctx.cfg.delivery;
        loop {
            self.deliver(&mut conn, &site, job).await;
            sent += 1;
            if !conn.reusable()
                || sent >= self.limits.max_messages_per_connection.max(1)
                || self.ctx.shutdown.is_cancelled()
            {
                break;
            }
            let (tx, rx) = oneshot::channel();
            if self.dest.send(DestMsg::Next(tx)).is_err() {
                break;
            }
            tokio::select! {
                next = rx => match next {
                    Ok(j) => job = j,
                    Err(_) => break,
                },
                _ = tokio::time::sleep(cfg.idle_timeout) => break,
                _ = self.ctx.shutdown.cancelled() => break,
            }
        }
        conn.quit().await;
        let _ = self.dest.send(DestMsg::WorkerExit);
    }

    fn timeouts(&self) -> Timeouts {
        let d = &self.ctx.cfg.delivery;
        Timeouts {
            connect: d.connect_timeout,
            phases: d.timeouts,
        }
    }

    /// Connects to the first host of the job's site that greets us, from the egress source.
    async fn open(&self, job: &Job) -> Result<(Connection, String), (Status, Response, String)> {
        let cfg = &self.ctx.cfg;
        let targets = job.site.as_ref().map_or(&[][..], |s| &s.targets[..]);
        let helo = self.source.ehlo.as_deref().unwrap_or(&cfg.smtp.hostname);
        let bind = self.source.bind;
        let timeouts = self.timeouts();
        let mut last: Option<(Response, String)> = None;
        for target in targets {
            for ip in &target.addrs {
                // A source bound to an IPv4 address cannot reach an IPv6 host, and vice versa.
                if bind.is_some_and(|b| b.is_ipv4() != ip.is_ipv4()) {
                    continue;
                }
                let addr = std::net::SocketAddr::new(*ip, target.port);
                let attempt = client::connect(
                    addr,
                    bind,
                    &target.host,
                    helo,
                    timeouts,
                    self.ctx.tls.clone(),
                )
                .await;
                let attempt = match attempt {
                    // A server whose TLS is broken still gets the mail, in plain text
                    // (opportunistic TLS must never make delivery impossible).
                    Err(ClientError::Tls(e)) => {
                        tracing::info!(host = %target.host, %addr, error = %e,
                            "STARTTLS handshake failed; retrying without TLS");
                        client::connect(addr, bind, &target.host, helo, timeouts, None).await
                    }
                    other => other,
                };
                match attempt {
                    Ok(conn) => {
                        tracing::debug!(host = %target.host, %addr, tls = conn.tls, "connected");
                        return Ok((conn, target.host.clone()));
                    }
                    Err(e) => {
                        tracing::debug!(host = %target.host, %addr, error = %e, "connection failed");
                        last = Some((e.response(), target.host.clone()));
                    }
                }
            }
        }
        let (mut response, site) = last.unwrap_or_else(|| {
            (
                Response {
                    code: 0,
                    enhanced: "4.4.1".into(),
                    text: match bind {
                        Some(b) => format!("no host address reachable from egress address {b}"),
                        None => "no host to connect to".into(),
                    },
                },
                String::new(),
            )
        });
        // A greeting refusal is about the connection, not the recipients: retry later, even
        // when it was a 5xx (RFC 5321 §3.1: try the next MX, then defer).
        if response.code >= 500 {
            response.text = format!("{} {}", response.code, response.text);
            response.code = 451;
            response.enhanced = "4.4.1".into();
        }
        Err((Status::Transient, response, site))
    }

    async fn deliver(&self, conn: &mut Connection, site: &str, job: Job) {
        let peer = conn.peer.to_string();
        if Instant::now() >= job.expires_at {
            let r = Response {
                code: 0,
                enhanced: "4.4.7".into(),
                text: "message expired before a delivery attempt".into(),
            };
            self.ctx.queue.report(Outcome::all(
                job,
                Status::Expired,
                r,
                site.to_string(),
                peer,
            ));
            return;
        }
        let body = match self.ctx.spool.read_body(job.id) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(id = %crate::queue::format_id(job.id), error = %e,
                    "cannot read a queued message from the spool");
                let r = Response {
                    code: 0,
                    enhanced: "4.3.0".into(),
                    text: format!("spool read failed: {e}"),
                };
                self.ctx.queue.report(Outcome::all(
                    job,
                    Status::Transient,
                    r,
                    site.to_string(),
                    peer,
                ));
                return;
            }
        };
        let msg = Outgoing {
            sender: &job.sender,
            rcpts: &job.addresses,
            body: &body,
        };
        let results: Vec<RcptResult> = match conn.send(&msg).await {
            Ok(replies) => replies
                .into_iter()
                .map(|r| RcptResult {
                    status: classify(&r),
                    response: r,
                })
                .collect(),
            Err(e) => {
                let mut r = e.response();
                r.text = format!("connection to {site} failed: {}", r.text);
                job.rcpts
                    .iter()
                    .map(|_| RcptResult {
                        status: Status::Transient,
                        response: r.clone(),
                    })
                    .collect()
            }
        };
        let feedback = if results.iter().any(|r| r.status == Status::Delivered) {
            Feedback::Accepted
        } else if let Some(r) = results
            .iter()
            .find(|r| r.status == Status::Transient && is_throttling(&r.response))
        {
            Feedback::Throttled(r.response.clone())
        } else {
            Feedback::Neutral
        };
        let _ = self.dest.send(DestMsg::Feedback(feedback));
        self.ctx.queue.report(Outcome {
            job,
            results,
            site: site.to_string(),
            peer,
        });
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// 2xx delivered, 5xx permanent, anything else transient.
fn classify(r: &Response) -> Status {
    match r.code / 100 {
        2 => Status::Delivered,
        5 => Status::Permanent,
        _ => Status::Transient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn aimd_halves_on_throttle_and_adds_back_slowly() {
        let mut a = Adaptive::new(true, 16);
        let t0 = Instant::now();
        assert_eq!(a.throttled(t0), Some(8));
        // A burst of throttling replies cuts once per spacing, not once per reply.
        assert_eq!(a.throttled(t0 + Duration::from_secs(1)), None);
        assert_eq!(a.throttled(t0 + CUT_SPACING), Some(4));
        for _ in 0..RAISE_EVERY - 1 {
            assert_eq!(a.accepted(), None);
        }
        assert_eq!(a.accepted(), Some(5));
        // Never below one, never above the maximum.
        let mut t = t0 + CUT_SPACING;
        for _ in 0..10 {
            t += CUT_SPACING;
            a.throttled(t);
        }
        assert_eq!(a.current, 1);
        for _ in 0..(RAISE_EVERY * 40) {
            a.accepted();
        }
        assert_eq!(a.current, 16);
        let mut off = Adaptive::new(false, 16);
        assert_eq!(off.throttled(t0), None);
    }

    #[test]
    fn throttling_signals() {
        let r = |code, enhanced: &str, text: &str| Response {
            code,
            enhanced: enhanced.into(),
            text: text.into(),
        };
        assert!(is_throttling(&r(421, "4.7.0", "Try again later")));
        assert!(is_throttling(&r(451, "4.7.500", "Server busy")));
        assert!(is_throttling(&r(450, "", "Too many messages, slow down")));
        assert!(is_throttling(&r(
            0,
            "4.4.1",
            "connect: Connection refused (os error 111)"
        )));
        assert!(!is_throttling(&r(450, "4.2.2", "Mailbox full")));
        assert!(!is_throttling(&r(550, "5.1.1", "User unknown")));
    }
}
