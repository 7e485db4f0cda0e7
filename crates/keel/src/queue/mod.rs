//! The queue manager: the one owner of every spooled message's delivery state.
//!
//! Messages arrive from ingress (after they are durable) and from spool recovery. The manager
//! splits each message's pending recipients by destination domain into [`Job`]s — the
//! scheduled queues are keyed by domain — and hands due jobs to that domain's destination task
//! (the ready queue, in `delivery`). Outcomes come back here; the manager records them in the
//! envelope (`Spool::update`), emits one event per recipient state change, reschedules
//! transient failures on the retry schedule, and removes the message from the spool once no
//! recipient is left.
//!
//! Everything runs on one task, talking to others by message: no lock guards queue state.
//! Memory per queued message is its envelope plus a few words; bodies stay on disk.
//!
//! Invariant: a message is removed from the spool only after every recipient reached a final
//! state (delivered, bounced, expired) and that state was emitted as an event.

pub mod admin;
pub mod fair;
pub mod job;
pub mod retry;
mod shaping;
pub mod stats;
pub mod warmup;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use keel_config::Config;
use keel_spool::Spool;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::delivery::mx::ResolveError;
use crate::delivery::site::{self, Site};
use crate::delivery::{self, DestMsg};
use crate::envelope::Envelope;
use crate::events::{self, Event, EventSink, Kind, Response};
pub use job::{Job, Outcome, RcptResult, Status};
use retry::RetryDecision;

/// Requests to the queue manager.
pub enum Command {
    /// A durable message to schedule (new from ingress, or recovered from the spool).
    Enqueue { id: u128, envelope: Envelope },
    /// The result of a delivery attempt.
    Outcome(Outcome),
    /// A domain's site was looked up.
    Resolved {
        domain: String,
        result: Result<Site, ResolveError>,
    },
    /// Jobs a ready queue handed back (recall for a suspension or bounce).
    Recalled(Vec<Job>),
    /// The queue summary.
    Snapshot {
        /// How many of the busiest queues to list (0: all).
        limit: usize,
        reply: oneshot::Sender<admin::Snapshot>,
    },
    Suspend {
        selector: admin::Selector,
        duration: Option<Duration>,
        reason: String,
        reply: oneshot::Sender<admin::Suspension>,
    },
    Resume {
        selector: admin::Selector,
        reply: oneshot::Sender<usize>,
    },
    Bounce {
        selector: admin::Selector,
        dry_run: bool,
        reason: String,
        reply: oneshot::Sender<admin::BounceResult>,
    },
    /// A new configuration (already validated) to apply.
    Reload {
        cfg: Arc<Config>,
        reply: oneshot::Sender<()>,
    },
}

/// Cheap handle to the queue manager.
#[derive(Clone)]
pub struct QueueHandle {
    tx: mpsc::UnboundedSender<Command>,
}

impl QueueHandle {
    pub fn enqueue(&self, id: u128, envelope: Envelope) {
        let _ = self.tx.send(Command::Enqueue { id, envelope });
    }

    pub fn report(&self, outcome: Outcome) {
        let _ = self.tx.send(Command::Outcome(outcome));
    }

    pub fn recalled(&self, jobs: Vec<Job>) {
        let _ = self.tx.send(Command::Recalled(jobs));
    }

    /// Sends an operator command; `None` if the queue manager is gone (shutting down).
    pub async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).ok()?;
        rx.await.ok()
    }
}

/// Formats a message id the way logs and replies show it.
pub fn format_id(id: u128) -> String {
    format!("{id:032x}")
}

struct Message {
    envelope: Envelope,
    sender: Arc<str>,
    /// Jobs of this message currently out (scheduled or in delivery).
    jobs: usize,
}

struct Destination {
    tx: mpsc::UnboundedSender<DestMsg>,
    /// Jobs held back because the queue reached `shaping.max_ready` or `max_ready_bytes`.
    backlog: fair::FairQueue,
    /// Message bytes of the outstanding jobs.
    outstanding_bytes: u64,
    /// The domain and MX hosts the limits were computed for (recomputed on reload).
    domain: String,
    mx_hosts: Vec<String>,
    stats: Arc<delivery::ReadyStats>,
    limits: keel_config::Limits,
    /// Jobs dispatched to it whose outcome has not come back yet.
    outstanding: usize,
    /// When `outstanding` last dropped to zero.
    idle_since: Option<Instant>,
}

/// A ready queue's key: (egress source, site).
type ReadyKey = (Arc<str>, Arc<str>);

/// How long a domain's resolved site is used before it is looked up again.
const SITE_TTL: Duration = Duration::from_secs(300);

/// Smooth weighted round-robin over a pool's sources: over any run of jobs each source gets
/// its weight's share, interleaved rather than in blocks.
struct PoolPicker {
    members: Vec<(Arc<str>, i64, i64)>,
}

impl PoolPicker {
    fn new(members: &[(String, u32)]) -> Self {
        PoolPicker {
            members: members
                .iter()
                .map(|(n, w)| (Arc::from(n.as_str()), i64::from(*w), 0))
                .collect(),
        }
    }

    /// The next source among those `allowed` (warm-up caps); `None` if none is.
    fn pick(&mut self, allowed: impl Fn(&str) -> bool) -> Option<Arc<str>> {
        let ok: Vec<bool> = self.members.iter().map(|m| allowed(&m.0)).collect();
        let total: i64 = self
            .members
            .iter()
            .zip(&ok)
            .filter(|(_, ok)| **ok)
            .map(|(m, _)| m.1)
            .sum();
        if total == 0 {
            return None;
        }
        for (m, ok) in self.members.iter_mut().zip(&ok) {
            if *ok {
                m.2 += m.1;
            }
        }
        let best = self
            .members
            .iter_mut()
            .zip(&ok)
            .filter(|(_, ok)| **ok)
            .map(|(m, _)| m)
            .max_by_key(|m| m.2)?;
        best.2 -= total;
        Some(best.0.clone())
    }
}

/// How often idle destinations are swept.
const SWEEP_INTERVAL: Duration = Duration::from_secs(15);

/// The queue manager task's state.
pub struct QueueManager {
    cfg: Arc<Config>,
    spool: Spool,
    events: EventSink,
    rx: mpsc::UnboundedReceiver<Command>,
    messages: HashMap<u128, Message>,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    /// Scheduled jobs by timer sequence number, with their due time.
    waiting: HashMap<u64, (Instant, Job)>,
    stats: stats::QueueStats,
    seq: u64,
    destinations: HashMap<ReadyKey, Destination>,
    /// Resolved sites by domain, with when to look them up again.
    sites: HashMap<String, (Arc<Site>, Instant)>,
    /// Jobs waiting for their domain's lookup.
    resolving: HashMap<String, Vec<Job>>,
    pools: HashMap<String, PoolPicker>,
    suspensions: Vec<admin::Suspension>,
    /// Jobs held back by a suspension.
    parked: Vec<Job>,
    /// When parked jobs are next re-checked.
    park_check: Option<Instant>,
    /// The last failure reply per domain, for the queue summary.
    last_response: HashMap<String, Response>,
    rule_state: shaping::RuleState,
    warmup: warmup::Warmup,
    handle: QueueHandle,
    delivery: Arc<delivery::Context>,
    shutdown: CancellationToken,
}

/// Creates the queue manager; run it with [`QueueManager::run`].
pub fn channel() -> (QueueHandle, mpsc::UnboundedReceiver<Command>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (QueueHandle { tx }, rx)
}

impl QueueManager {
    pub fn new(
        cfg: Arc<Config>,
        spool: Spool,
        events: EventSink,
        rx: mpsc::UnboundedReceiver<Command>,
        handle: QueueHandle,
        delivery: Arc<delivery::Context>,
        shutdown: CancellationToken,
    ) -> Self {
        let pools = cfg
            .egress
            .pools
            .iter()
            .map(|p| (p.name.clone(), PoolPicker::new(&p.members)))
            .collect();
        Self {
            suspensions: Vec::new(),
            parked: Vec::new(),
            park_check: None,
            last_response: HashMap::new(),
            rule_state: shaping::RuleState::default(),
            warmup: warmup::Warmup::load(warmup::Warmup::path_for(&cfg.spool.dir)),
            sites: HashMap::new(),
            resolving: HashMap::new(),
            pools,
            handle,
            cfg,
            spool,
            events,
            rx,
            messages: HashMap::new(),
            timers: BinaryHeap::new(),
            waiting: HashMap::new(),
            stats: stats::QueueStats::default(),
            seq: 0,
            destinations: HashMap::new(),
            delivery,
            shutdown,
        }
    }

    /// Runs until shutdown or until every handle is dropped.
    pub async fn run(mut self) {
        let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next = self.timers.peek().map(|Reverse((t, _))| *t);
            let park_check = self.park_check;
            tokio::select! {
                cmd = self.rx.recv() => match cmd {
                    Some(Command::Enqueue { id, envelope }) => self.enqueue(id, envelope),
                    Some(Command::Outcome(o)) => self.outcome(o),
                    Some(Command::Resolved { domain, result }) => self.resolved(domain, result),
                    Some(Command::Recalled(jobs)) => self.recalled(jobs),
                    Some(Command::Snapshot { limit, reply }) => {
                        let started = std::time::Instant::now();
                        let snapshot = self.snapshot(limit);
                        tracing::debug!(
                            elapsed_us = started.elapsed().as_micros() as u64,
                            messages = snapshot.messages,
                            "queue summary computed"
                        );
                        let _ = reply.send(snapshot);
                    }
                    Some(Command::Suspend { selector, duration, reason, reply }) => {
                        let _ = reply.send(self.suspend(selector, duration, reason));
                    }
                    Some(Command::Resume { selector, reply }) => {
                        let _ = reply.send(self.resume(&selector));
                    }
                    Some(Command::Bounce { selector, dry_run, reason, reply }) => {
                        let _ = reply.send(self.bounce(&selector, dry_run, &reason));
                    }
                    Some(Command::Reload { cfg, reply }) => {
                        self.reload(cfg);
                        let _ = reply.send(());
                    }
                    None => break,
                },
                _ = sleep_until(park_check), if park_check.is_some() => self.unpark_all(),
                _ = sleep_until(next), if next.is_some() => self.fire_timers(),
                _ = sweep.tick() => self.sweep_destinations(),
                _ = self.shutdown.cancelled() => break,
            }
        }
        self.warmup.save();
        tracing::debug!(messages = self.messages.len(), "queue manager stopped");
    }

    fn expires_at(&self, envelope: &Envelope) -> Instant {
        let max_age = self.cfg.retry.max_age;
        let age = age_of(envelope);
        Instant::now() + max_age.saturating_sub(age)
    }

    fn enqueue(&mut self, id: u128, envelope: Envelope) {
        let expires_at = self.expires_at(&envelope);
        let sender: Arc<str> = Arc::from(envelope.sender.as_str());
        let mut by_domain: Vec<(String, Vec<usize>)> = Vec::new();
        for (i, r) in envelope.recipients.iter().enumerate() {
            if r.done {
                continue;
            }
            let d = r.domain();
            match by_domain.iter_mut().find(|(dd, _)| dd == d) {
                Some((_, v)) => v.push(i),
                None => by_domain.push((d.to_string(), vec![i])),
            }
        }
        // Receivers commonly refuse more than 100 recipients per transaction: split.
        let chunk = self.cfg.delivery.max_recipients_per_transaction.max(1);
        let by_domain: Vec<(String, Vec<usize>)> = by_domain
            .into_iter()
            .flat_map(|(domain, rcpts)| {
                rcpts
                    .chunks(chunk)
                    .map(|c| (domain.clone(), c.to_vec()))
                    .collect::<Vec<_>>()
            })
            .collect();
        // Chosen when each job is first dispatched (warm-up caps are checked then).
        let source: Arc<str> = Arc::from("");
        let class = fair::class_of(&envelope.campaign, &envelope.tenant);
        let mut jobs = Vec::with_capacity(by_domain.len());
        for (domain, rcpts) in by_domain {
            let attempt = rcpts
                .iter()
                .map(|&i| envelope.recipients[i].attempts)
                .max()
                .unwrap_or(0)
                + 1;
            jobs.push(Job {
                id,
                addresses: rcpts
                    .iter()
                    .map(|&i| envelope.recipients[i].address.clone())
                    .collect(),
                rcpts,
                domain,
                sender: sender.clone(),
                source: source.clone(),
                site: None,
                size: envelope.size,
                class: class.clone(),
                attempt,
                expires_at,
            });
        }
        if jobs.is_empty() {
            // Recovered with nothing left to do (its removal was lost in a crash).
            self.spool.remove(id);
            return;
        }
        self.stats.add(&envelope);
        self.messages.insert(
            id,
            Message {
                envelope,
                sender,
                jobs: jobs.len(),
            },
        );
        for job in jobs {
            self.dispatch(job);
        }
    }

    /// The egress source for a message of `pool` (unknown or empty: the default pool), among
    /// the pool's sources not held back by their warm-up cap; `None` if all are.
    fn pick_source(&mut self, pool: &str) -> Option<Arc<str>> {
        let name = if pool.is_empty() || !self.pools.contains_key(pool) {
            if !pool.is_empty() {
                tracing::warn!(
                    pool,
                    "message names an unknown egress pool; using the default pool"
                );
            }
            keel_config::DEFAULT_EGRESS
        } else {
            pool
        };
        let day = warmup::today();
        let cfg = self.cfg.clone();
        let warm = &self.warmup;
        let allowed = |s: &str| cfg.egress.source(s).is_none_or(|src| warm.allows(src, day));
        let picked = match self.pools.get_mut(name) {
            Some(p) => p.pick(allowed),
            None => Some(Arc::from(keel_config::DEFAULT_EGRESS)),
        }?;
        if let Some(src) = cfg.egress.source(&picked) {
            self.warmup.count(src, day);
        }
        Some(picked)
    }

    pub(crate) fn dispatch(&mut self, mut job: Job) {
        // Recipients finished meanwhile (an administrative bounce) are not attempted again.
        let Some(msg) = self.messages.get_mut(&job.id) else {
            return;
        };
        if job.rcpts.iter().any(|&i| msg.envelope.recipients[i].done) {
            let keep: Vec<bool> = job
                .rcpts
                .iter()
                .map(|&i| !msg.envelope.recipients[i].done)
                .collect();
            let mut k = keep.iter();
            job.rcpts.retain(|_| *k.next().unwrap_or(&false));
            let mut k = keep.iter();
            job.addresses.retain(|_| *k.next().unwrap_or(&false));
            if job.rcpts.is_empty() {
                msg.jobs = msg.jobs.saturating_sub(1);
                let id = job.id;
                return self.persist(id);
            }
        }
        if Instant::now() >= job.expires_at {
            let outcome = Outcome::all(
                job,
                Status::Expired,
                expired_response(),
                String::new(),
                String::new(),
            );
            return self.outcome_counted(outcome, false);
        }
        if job.source.is_empty() {
            let pool = self
                .messages
                .get(&job.id)
                .map(|m| m.envelope.pool.clone())
                .unwrap_or_default();
            match self.pick_source(&pool) {
                Some(s) => job.source = s,
                None => {
                    // Every source of the pool reached its warm-up cap for today.
                    tracing::debug!(
                        pool,
                        "egress pool at its warm-up caps; job waits for tomorrow"
                    );
                    return self.schedule(job, warmup::until_tomorrow());
                }
            }
        }
        if let Some((site, until)) = self.sites.get(&job.domain)
            && Instant::now() < *until
        {
            let site = site.clone();
            return self.send_ready(job, site);
        }
        let domain = job.domain.clone();
        let waiting = self.resolving.entry(domain.clone()).or_default();
        waiting.push(job);
        if waiting.len() == 1 {
            // First job for this domain: look it up off the manager's task.
            let ctx = self.delivery.clone();
            let cfg = self.cfg.clone();
            let handle = self.handle.clone();
            self.delivery.tracker.spawn(async move {
                let result = site::resolve(&cfg, &ctx.resolver, &domain).await;
                let _ = handle.tx.send(Command::Resolved { domain, result });
            });
        }
    }

    fn resolved(&mut self, domain: String, result: Result<Site, ResolveError>) {
        let jobs = self.resolving.remove(&domain).unwrap_or_default();
        match result {
            Ok(site) => {
                let site = Arc::new(site);
                self.sites
                    .insert(domain, (site.clone(), Instant::now() + SITE_TTL));
                for job in jobs {
                    self.send_ready(job, site.clone());
                }
            }
            Err(e) => {
                let (status, response) = match e {
                    ResolveError::Permanent(r) => (Status::Permanent, r),
                    ResolveError::Transient(r) => (Status::Transient, r),
                };
                for job in jobs {
                    let o =
                        Outcome::all(job, status, response.clone(), String::new(), String::new());
                    self.outcome_counted(o, false);
                }
            }
        }
    }

    /// Hands a job to the ready queue of (its source, `site`), starting it if needed, unless
    /// a suspension holds it back.
    fn send_ready(&mut self, mut job: Job, site: Arc<Site>) {
        let key: ReadyKey = (job.source.clone(), site.key.clone());
        job.site = Some(site.clone());
        if let Some(until) = self.suspension_for(&job) {
            return self.park(job, until);
        }
        loop {
            let dest = match self.destinations.entry(key.clone()) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    let source =
                        self.cfg.egress.source(&key.0).cloned().unwrap_or_else(|| {
                            keel_config::EgressConfig::default().sources[0].clone()
                        });
                    let limits = self.cfg.shaping.limits_for(&job.domain, &site.mx_hosts);
                    let stats = Arc::new(delivery::ReadyStats::default());
                    e.insert(Destination {
                        tx: delivery::spawn_ready_queue(
                            source,
                            limits,
                            stats.clone(),
                            self.delivery.clone(),
                        ),
                        stats,
                        limits,
                        backlog: Default::default(),
                        outstanding_bytes: 0,
                        domain: job.domain.clone(),
                        mx_hosts: site.mx_hosts.clone(),
                        outstanding: 0,
                        idle_since: None,
                    })
                }
            };
            let over_bytes = dest.outstanding > 0
                && dest.outstanding_bytes + job.size > self.cfg.shaping.max_ready_bytes;
            if dest.outstanding >= self.cfg.shaping.max_ready || over_bytes {
                // The ready queue is full: the job waits here, in order, until one comes back.
                let action = format!(
                    "ready queue {}/{} is full ({} jobs, {} bytes); waiting in the scheduled queue",
                    key.0, key.1, dest.outstanding, dest.outstanding_bytes
                );
                self.emit_delayed(&job, action);
                if let Some(dest) = self.destinations.get_mut(&key) {
                    dest.backlog.push_back(job);
                }
                return;
            }
            let size = job.size;
            match dest.tx.send(DestMsg::Job(job)) {
                Ok(()) => {
                    dest.outstanding += 1;
                    dest.outstanding_bytes += size;
                    dest.idle_since = None;
                    return;
                }
                Err(mpsc::error::SendError(DestMsg::Job(j))) => {
                    // The ready queue ended (shutdown); start a fresh one.
                    self.destinations.remove(&key);
                    if self.shutdown.is_cancelled() {
                        return;
                    }
                    job = j;
                }
                Err(_) => return,
            }
        }
    }

    /// Counts a job as back from its ready queue, and lets a held-back one in.
    fn undispatched(&mut self, job: &Job) {
        let key = job
            .site
            .as_ref()
            .map(|s| (job.source.clone(), s.key.clone()));
        if let Some(key) = key
            && let Some(d) = self.destinations.get_mut(&key)
        {
            d.outstanding = d.outstanding.saturating_sub(1);
            d.outstanding_bytes = d.outstanding_bytes.saturating_sub(job.size);
            if d.outstanding == 0 && d.backlog.is_empty() {
                d.idle_since = Some(Instant::now());
            }
            if let Some(next) = d.backlog.pop_front() {
                self.dispatch(next);
            }
        }
    }

    /// One `Delayed` event per recipient of a job held in the scheduled queue.
    fn emit_delayed(&self, job: &Job, action: String) {
        let Some(msg) = self.messages.get(&job.id) else {
            return;
        };
        let now = SystemTime::now();
        for addr in &job.addresses {
            self.events.emit(Event {
                kind: Kind::Delayed,
                time: events::rfc3339(now),
                id: format_id(job.id),
                sender: msg.envelope.sender.clone(),
                recipient: addr.clone(),
                size: msg.envelope.size,
                queue: job.domain.clone(),
                site: job
                    .site
                    .as_ref()
                    .map_or_else(String::new, |s| s.key.to_string()),
                source: job.source.to_string(),
                attempt: job.attempt,
                response: None,
                peer: String::new(),
                queue_time_ms: events::epoch_ms(now).saturating_sub(msg.envelope.received_at_ms),
                action: Some(action.clone()),
            });
        }
    }

    /// Applies a new configuration: retry schedule, pools, routes (sites are looked up again),
    /// shaping limits of every ready queue, reply rules.
    fn reload(&mut self, cfg: Arc<Config>) {
        self.pools = cfg
            .egress
            .pools
            .iter()
            .map(|p| (p.name.clone(), PoolPicker::new(&p.members)))
            .collect();
        self.sites.clear();
        for d in self.destinations.values_mut() {
            let limits = cfg.shaping.limits_for(&d.domain, &d.mx_hosts);
            if limits != d.limits {
                d.limits = limits;
                let _ = d.tx.send(DestMsg::Limits(limits));
            }
        }
        self.cfg = cfg;
    }

    /// Lets go of destinations with nothing outstanding for a while: dropping the sender ends
    /// the task once its idle connections close, so memory does not grow with the number of
    /// domains ever seen. A destination in use keeps its warm connections.
    fn sweep_destinations(&mut self) {
        self.warmup.save();
        let keep = self.cfg.delivery.idle_timeout.max(SWEEP_INTERVAL);
        let now = Instant::now();
        self.destinations.retain(|_, d| {
            d.outstanding > 0
                || !d.backlog.is_empty()
                || d.idle_since.is_none_or(|t| now.duration_since(t) < keep)
        });
        // Per-domain memory follows the domains that still have mail queued.
        let stats = &self.stats;
        self.last_response
            .retain(|d, _| stats.domains.contains_key(d));
        self.sites.retain(|_, (_, until)| *until > now);
        self.rule_state.prune(now);
    }

    fn schedule(&mut self, job: Job, delay: Duration) {
        self.seq += 1;
        self.timers
            .push(Reverse((Instant::now() + delay, self.seq)));
        self.waiting.insert(self.seq, (Instant::now() + delay, job));
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((t, seq))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            if let Some((_, job)) = self.waiting.remove(&seq) {
                self.dispatch(job);
            }
        }
    }

    fn outcome(&mut self, outcome: Outcome) {
        self.outcome_counted(outcome, true);
    }

    /// Applies an outcome. `dispatched` is false for jobs that never reached a destination.
    fn outcome_counted(&mut self, outcome: Outcome, dispatched: bool) {
        let Outcome {
            job,
            results,
            site,
            peer,
        } = outcome;
        if dispatched {
            self.undispatched(&job);
        }
        if let Some(site) = job.site.clone() {
            let mut seen: Vec<(u16, &str)> = Vec::new();
            let failures: Vec<Response> = results
                .iter()
                .filter(|r| matches!(r.status, Status::Transient | Status::Permanent))
                .filter(|r| {
                    let k = (r.response.code, r.response.text.as_str());
                    let new = !seen.contains(&k);
                    if new {
                        seen.push(k);
                    }
                    new
                })
                .map(|r| r.response.clone())
                .collect();
            for response in failures {
                self.check_reply_rules(&job.domain, &site, &job.source, &response);
            }
        }
        let Some(msg) = self.messages.get_mut(&job.id) else {
            return;
        };
        let now = SystemTime::now();
        let queue_time_ms = events::epoch_ms(now).saturating_sub(msg.envelope.received_at_ms);
        let mut retry_rcpts = Vec::new();
        let mut last_transient: Option<Response> = None;
        for (pos, result) in results.into_iter().enumerate() {
            let Some(&idx) = job.rcpts.get(pos) else {
                continue;
            };
            let rcpt = &mut msg.envelope.recipients[idx];
            if rcpt.done {
                // Finished meanwhile (administrative bounce): this result changes nothing.
                continue;
            }
            if result.status != Status::Expired {
                rcpt.attempts = job.attempt;
            }
            let kind = match result.status {
                Status::Delivered => Kind::Delivery,
                Status::Permanent => Kind::Bounce,
                Status::Expired => Kind::Expiration,
                Status::Transient => Kind::TransientFailure,
            };
            if result.status == Status::Transient {
                retry_rcpts.push(idx);
                last_transient = Some(result.response.clone());
                self.last_response
                    .insert(job.domain.clone(), result.response.clone());
            } else {
                rcpt.done = true;
                self.stats.recipient_done(&msg.envelope, idx);
            }
            let rcpt = &msg.envelope.recipients[idx];
            self.events.emit(Event {
                kind,
                time: events::rfc3339(now),
                id: format_id(job.id),
                sender: msg.sender.to_string(),
                recipient: rcpt.address.clone(),
                size: msg.envelope.size,
                queue: job.domain.clone(),
                site: site.clone(),
                source: job.source.to_string(),
                attempt: if result.status == Status::Expired {
                    rcpt.attempts
                } else {
                    job.attempt
                },
                response: Some(result.response),
                peer: peer.clone(),
                queue_time_ms,
                action: None,
            });
        }
        msg.jobs = msg.jobs.saturating_sub(1);

        if !retry_rcpts.is_empty() {
            let decision = retry::next_delay(
                &self.cfg.retry.intervals,
                job.attempt,
                age_of(&msg.envelope),
                self.cfg.retry.max_age,
            );
            let next = Job {
                addresses: retry_rcpts
                    .iter()
                    .map(|&i| msg.envelope.recipients[i].address.clone())
                    .collect(),
                rcpts: retry_rcpts,
                attempt: job.attempt + 1,
                ..job
            };
            msg.jobs += 1;
            match decision {
                RetryDecision::RetryIn(d) | RetryDecision::ExpireAt(d) => {
                    let id = next.id;
                    self.schedule(next, d);
                    self.persist(id);
                }
                RetryDecision::Expire => {
                    let mut response = expired_response();
                    if let Some(last) = last_transient {
                        response.text =
                            format!("{}; last error: {} {}", response.text, last.code, last.text);
                    }
                    let outcome = Outcome::all(next, Status::Expired, response, site, peer);
                    self.outcome_counted(outcome, false);
                }
            }
            return;
        }
        self.persist(job.id);
    }

    /// Writes the message's progress to the spool, or removes it when it is finished.
    pub(crate) fn persist(&mut self, id: u128) {
        let Some(msg) = self.messages.get(&id) else {
            return;
        };
        if msg.envelope.is_finished() && msg.jobs == 0 {
            self.spool.remove(id);
            if let Some(msg) = self.messages.remove(&id) {
                self.stats.removed(&msg.envelope);
            }
        } else {
            self.spool.update(id, msg.envelope.encode());
        }
    }
}

fn age_of(envelope: &Envelope) -> Duration {
    let now = events::epoch_ms(SystemTime::now());
    Duration::from_millis(now.saturating_sub(envelope.received_at_ms))
}

fn expired_response() -> Response {
    Response {
        code: 0,
        enhanced: "4.4.7".into(),
        text: "message expired: not delivered within the maximum queue lifetime".into(),
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
