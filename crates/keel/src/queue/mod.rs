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

pub mod job;
pub mod retry;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use keel_config::Config;
use keel_spool::Spool;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

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
    /// Jobs dispatched to it whose outcome has not come back yet.
    outstanding: usize,
    /// When `outstanding` last dropped to zero.
    idle_since: Option<Instant>,
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
    waiting: HashMap<u64, Job>,
    seq: u64,
    destinations: HashMap<String, Destination>,
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
        delivery: Arc<delivery::Context>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            cfg,
            spool,
            events,
            rx,
            messages: HashMap::new(),
            timers: BinaryHeap::new(),
            waiting: HashMap::new(),
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
            tokio::select! {
                cmd = self.rx.recv() => match cmd {
                    Some(Command::Enqueue { id, envelope }) => self.enqueue(id, envelope),
                    Some(Command::Outcome(o)) => self.outcome(o),
                    None => break,
                },
                _ = sleep_until(next), if next.is_some() => self.fire_timers(),
                _ = sweep.tick() => self.sweep_destinations(),
                _ = self.shutdown.cancelled() => break,
            }
        }
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
                attempt,
                expires_at,
            });
        }
        if jobs.is_empty() {
            // Recovered with nothing left to do (its removal was lost in a crash).
            self.spool.remove(id);
            return;
        }
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

    fn dispatch(&mut self, job: Job) {
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
        let domain = job.domain.clone();
        let mut job = job;
        loop {
            let dest = self
                .destinations
                .entry(domain.clone())
                .or_insert_with(|| Destination {
                    tx: delivery::spawn_destination(domain.clone(), self.delivery.clone()),
                    outstanding: 0,
                    idle_since: None,
                });
            match dest.tx.send(DestMsg::Job(job)) {
                Ok(()) => {
                    dest.outstanding += 1;
                    dest.idle_since = None;
                    return;
                }
                Err(mpsc::error::SendError(DestMsg::Job(j))) => {
                    // The destination task ended (shutdown); start a fresh one.
                    self.destinations.remove(&domain);
                    if self.shutdown.is_cancelled() {
                        return;
                    }
                    job = j;
                }
                Err(_) => return,
            }
        }
    }

    /// Lets go of destinations with nothing outstanding for a while: dropping the sender ends
    /// the task once its idle connections close, so memory does not grow with the number of
    /// domains ever seen. A destination in use keeps its warm connections.
    fn sweep_destinations(&mut self) {
        let keep = self.cfg.delivery.idle_timeout.max(SWEEP_INTERVAL);
        let now = Instant::now();
        self.destinations.retain(|_, d| {
            d.outstanding > 0 || d.idle_since.is_none_or(|t| now.duration_since(t) < keep)
        });
    }

    fn schedule(&mut self, job: Job, delay: Duration) {
        self.seq += 1;
        self.timers
            .push(Reverse((Instant::now() + delay, self.seq)));
        self.waiting.insert(self.seq, job);
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((t, seq))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            if let Some(job) = self.waiting.remove(&seq) {
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
        if dispatched && let Some(d) = self.destinations.get_mut(&job.domain) {
            d.outstanding = d.outstanding.saturating_sub(1);
            if d.outstanding == 0 {
                d.idle_since = Some(Instant::now());
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
            } else {
                rcpt.done = true;
            }
            self.events.emit(Event {
                kind,
                time: events::rfc3339(now),
                id: format_id(job.id),
                sender: msg.sender.to_string(),
                recipient: rcpt.address.clone(),
                size: msg.envelope.size,
                queue: job.domain.clone(),
                site: site.clone(),
                attempt: if result.status == Status::Expired {
                    rcpt.attempts
                } else {
                    job.attempt
                },
                response: Some(result.response),
                peer: peer.clone(),
                queue_time_ms,
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
    fn persist(&mut self, id: u128) {
        let Some(msg) = self.messages.get(&id) else {
            return;
        };
        if msg.envelope.is_finished() && msg.jobs == 0 {
            self.spool.remove(id);
            self.messages.remove(&id);
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
