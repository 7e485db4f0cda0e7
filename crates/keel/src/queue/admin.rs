//! Operator control of the queues: the summary, suspensions and administrative bounces.
//!
//! These run on the queue manager's task, like everything that touches queue state; the HTTP
//! admin API reaches them through [`super::Command`] messages with a reply channel.
//!
//! - A **suspension** (by domain, site, egress source, campaign or tenant, optionally for a
//!   duration) stops new delivery attempts for matching jobs: jobs about to be handed to a
//!   ready queue are parked instead, and jobs already waiting in ready queues are recalled.
//!   Deliveries in progress finish. Resuming (or the duration passing) dispatches the parked
//!   jobs at once. Parking is not an attempt: no retry is counted and no event is emitted.
//! - An **administrative bounce** fails every pending recipient matching the selector with an
//!   `AdminBounce` event and removes finished messages from the spool. A dry run only counts.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{Job, QueueManager, format_id};
use crate::delivery::DestMsg;
use crate::events::{self, Event, Kind, Response};

/// What an operator command applies to. Exactly one field is set (checked by the API).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

impl Selector {
    /// Lower-cases the domain the way queues are keyed.
    pub fn normalized(mut self) -> Self {
        if let Some(d) = &mut self.domain {
            *d = d.trim_end_matches('.').to_ascii_lowercase();
        }
        self
    }

    /// How many fields are set.
    pub fn count(&self) -> usize {
        [
            &self.domain,
            &self.site,
            &self.source,
            &self.campaign,
            &self.tenant,
        ]
        .iter()
        .filter(|f| f.is_some())
        .count()
    }
}

/// The facts a selector is matched against.
pub(crate) struct Facts<'a> {
    pub domain: &'a str,
    pub site: Option<&'a str>,
    pub source: Option<&'a str>,
    pub campaign: &'a str,
    pub tenant: &'a str,
}

impl Selector {
    pub(crate) fn matches(&self, f: &Facts<'_>) -> bool {
        self.domain.as_deref().is_none_or(|d| d == f.domain)
            && self.site.as_deref().is_none_or(|s| f.site == Some(s))
            && self.source.as_deref().is_none_or(|s| f.source == Some(s))
            && self.campaign.as_deref().is_none_or(|c| c == f.campaign)
            && self.tenant.as_deref().is_none_or(|t| t == f.tenant)
    }
}

/// An active suspension.
#[derive(Debug, Clone, Serialize)]
pub struct Suspension {
    #[serde(flatten)]
    pub selector: Selector,
    pub reason: String,
    /// RFC 3339 end time; absent: until resumed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    #[serde(skip)]
    pub until_instant: Option<Instant>,
}

/// One scheduled queue (destination domain) in the summary.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduledView {
    pub domain: String,
    pub messages: usize,
    pub recipients: usize,
    pub bytes: u64,
    pub oldest_age_s: u64,
    /// Seconds until the next retry of a deferred job (absent: none waiting to retry).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_in_s: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_response: Option<Response>,
    pub parked: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
}

/// One ready queue (egress source, site) in the summary.
#[derive(Debug, Clone, Serialize)]
pub struct ReadyView {
    pub source: String,
    pub site: String,
    pub queued: usize,
    pub connections: usize,
    /// Jobs handed to this queue whose outcome is not back yet (queued + in delivery).
    pub outstanding: usize,
    /// Jobs waiting because this queue is full (`shaping.max_ready`).
    pub backlog: usize,
    pub max_connections: usize,
    /// The concurrency adaptive shaping allows right now (≤ `max_connections`).
    pub effective_max_connections: usize,
    /// A reply rule's throttle in force.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throttle: Option<String>,
    pub max_messages_per_connection: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_message_rate: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connection_rate: Option<String>,
}

/// `GET /api/v1/queues`.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub messages: usize,
    pub recipients: usize,
    pub bytes: u64,
    /// How many scheduled queues (domains) exist; `scheduled` lists the busiest of them.
    pub scheduled_queues: usize,
    /// How many ready queues exist; `ready` lists the busiest of them.
    pub ready_queues: usize,
    /// Outbound connections open across every ready queue.
    pub connections_out: usize,
    pub scheduled: Vec<ScheduledView>,
    pub ready: Vec<ReadyView>,
    pub suspensions: Vec<Suspension>,
}

/// The result of an administrative bounce.
#[derive(Debug, Clone, Serialize)]
pub struct BounceResult {
    pub dry_run: bool,
    pub messages: usize,
    pub recipients: usize,
}

/// How often parked jobs are re-checked at the latest (suspensions without an end).
const PARK_RECHECK: Duration = Duration::from_secs(60);

impl QueueManager {
    /// The active suspension matching a job, if any (expired ones are dropped here).
    pub(crate) fn suspension_for(&mut self, job: &Job) -> Option<Option<Instant>> {
        let now = Instant::now();
        self.suspensions
            .retain(|s| s.until_instant.is_none_or(|u| u > now));
        let msg = self.messages.get(&job.id)?;
        let facts = Facts {
            domain: &job.domain,
            site: job.site.as_ref().map(|s| &*s.key),
            source: Some(&job.source),
            campaign: &msg.envelope.campaign,
            tenant: &msg.envelope.tenant,
        };
        self.suspensions
            .iter()
            .find(|s| s.selector.matches(&facts))
            .map(|s| s.until_instant)
    }

    /// Parks a job under a suspension ending at `until` (or until resumed).
    pub(crate) fn park(&mut self, job: Job, until: Option<Instant>) {
        let wake = until.unwrap_or_else(|| Instant::now() + PARK_RECHECK);
        self.park_check = Some(self.park_check.map_or(wake, |t| t.min(wake)));
        self.parked.push(job);
    }

    /// Re-dispatches every parked job (those still suspended park again).
    pub(crate) fn unpark_all(&mut self) {
        self.park_check = None;
        for job in std::mem::take(&mut self.parked) {
            self.dispatch(job);
        }
    }

    pub(crate) fn suspend(
        &mut self,
        selector: Selector,
        duration: Option<Duration>,
        reason: String,
    ) -> Suspension {
        let until_instant = duration.map(|d| Instant::now() + d);
        let until = duration.map(|d| events::rfc3339(SystemTime::now() + d));
        let s = Suspension {
            selector: selector.clone(),
            reason,
            until,
            until_instant,
        };
        self.suspensions.retain(|old| old.selector != selector);
        self.suspensions.push(s.clone());
        tracing::info!(?selector, reason = %s.reason, until = ?s.until, "delivery suspended");
        self.recall(&selector);
        s
    }

    pub(crate) fn resume(&mut self, selector: &Selector) -> usize {
        let before = self.suspensions.len();
        self.suspensions.retain(|s| &s.selector != selector);
        let removed = before - self.suspensions.len();
        if removed > 0 {
            tracing::info!(?selector, "delivery resumed");
            self.unpark_all();
        }
        removed
    }

    /// Asks ready queues to hand back waiting jobs matching `selector`.
    fn recall(&mut self, selector: &Selector) {
        let campaigns: Arc<HashMap<u128, (String, String)>> =
            if selector.campaign.is_some() || selector.tenant.is_some() {
                Arc::new(
                    self.messages
                        .iter()
                        .map(|(id, m)| {
                            (
                                *id,
                                (m.envelope.campaign.clone(), m.envelope.tenant.clone()),
                            )
                        })
                        .collect(),
                )
            } else {
                Arc::new(HashMap::new())
            };
        for ((source, site), dest) in &self.destinations {
            if selector.source.as_deref().is_some_and(|s| s != &**source)
                || selector.site.as_deref().is_some_and(|s| s != &**site)
            {
                continue;
            }
            let sel = selector.clone();
            let campaigns = campaigns.clone();
            let pred = move |job: &Job| {
                let (campaign, tenant) = campaigns
                    .get(&job.id)
                    .map(|(c, t)| (c.as_str(), t.as_str()))
                    .unwrap_or(("", ""));
                sel.matches(&Facts {
                    domain: &job.domain,
                    site: job.site.as_ref().map(|s| &*s.key),
                    source: Some(&job.source),
                    campaign,
                    tenant,
                })
            };
            let _ = dest.tx.send(DestMsg::Recall(Box::new(pred)));
        }
    }

    /// Jobs a ready queue handed back.
    pub(crate) fn recalled(&mut self, jobs: Vec<Job>) {
        for job in jobs {
            self.undispatched(&job);
            self.dispatch(job);
        }
    }

    pub(crate) fn bounce(
        &mut self,
        selector: &Selector,
        dry_run: bool,
        reason: &str,
    ) -> BounceResult {
        let now = SystemTime::now();
        let mut messages = 0;
        let mut recipients = 0;
        let mut touched = Vec::new();
        for (id, msg) in self.messages.iter_mut() {
            let mut hit = false;
            for idx in 0..msg.envelope.recipients.len() {
                if msg.envelope.recipients[idx].done {
                    continue;
                }
                let domain = msg.envelope.recipients[idx].domain().to_string();
                let site = self.sites.get(&domain).map(|(s, _)| s.key.clone());
                let facts = Facts {
                    domain: &domain,
                    site: site.as_deref(),
                    source: None,
                    campaign: &msg.envelope.campaign,
                    tenant: &msg.envelope.tenant,
                };
                if !selector.matches(&facts) {
                    continue;
                }
                hit = true;
                recipients += 1;
                if dry_run {
                    continue;
                }
                msg.envelope.recipients[idx].done = true;
                self.stats.recipient_done(&msg.envelope, idx);
                let rcpt = &msg.envelope.recipients[idx];
                self.events.emit(Event {
                    kind: Kind::AdminBounce,
                    time: events::rfc3339(now),
                    id: format_id(*id),
                    sender: msg.envelope.sender.clone(),
                    recipient: rcpt.address.clone(),
                    size: msg.envelope.size,
                    queue: domain.clone(),
                    site: site.as_deref().unwrap_or("").to_string(),
                    source: String::new(),
                    attempt: rcpt.attempts,
                    response: Some(Response {
                        code: 0,
                        enhanced: "5.0.0".into(),
                        text: format!("bounced by the operator: {reason}"),
                    }),
                    peer: String::new(),
                    queue_time_ms: events::epoch_ms(now)
                        .saturating_sub(msg.envelope.received_at_ms),
                    action: None,
                });
            }
            if hit {
                messages += 1;
                touched.push(*id);
            }
        }
        if !dry_run {
            tracing::info!(
                ?selector,
                messages,
                recipients,
                reason,
                "administrative bounce"
            );
            self.drop_finished_jobs();
            for id in touched {
                self.persist(id);
            }
            self.recall(selector);
        }
        BounceResult {
            dry_run,
            messages,
            recipients,
        }
    }

    /// Drops waiting, parked and resolving jobs none of whose recipients is left, so their
    /// messages can leave the spool now rather than at the job's next retry time.
    fn drop_finished_jobs(&mut self) {
        let messages = &mut self.messages;
        let mut live = |job: &Job| {
            let keep = messages
                .get(&job.id)
                .is_some_and(|m| job.rcpts.iter().any(|&i| !m.envelope.recipients[i].done));
            if !keep && let Some(m) = messages.get_mut(&job.id) {
                m.jobs = m.jobs.saturating_sub(1);
            }
            keep
        };
        self.waiting.retain(|_, (_, job)| live(job));
        self.parked.retain(|job| live(job));
        for jobs in self.resolving.values_mut() {
            jobs.retain(|job| live(job));
        }
    }

    /// The queue summary: totals, and the `limit` busiest scheduled and ready queues (0: all).
    ///
    /// Cost: per-domain statistics are maintained incrementally (`stats.rs`), so this sorts the
    /// domains, builds views for the `limit` shown and makes one pass over the retry timers.
    pub(crate) fn snapshot(&mut self, limit: usize) -> Snapshot {
        let now_ms = events::epoch_ms(SystemTime::now());
        let now = Instant::now();
        self.suspensions
            .retain(|s| s.until_instant.is_none_or(|u| u > now));
        let scheduled_queues = self.stats.domains.len();
        let mut order: Vec<(&str, &super::stats::DomainStats)> = self
            .stats
            .domains
            .iter()
            .map(|(d, s)| (d.as_str(), s))
            .collect();
        order.sort_unstable_by(|a, b| b.1.recipients.cmp(&a.1.recipients).then(a.0.cmp(b.0)));
        if limit > 0 {
            order.truncate(limit);
        }
        let mut views: HashMap<&str, ScheduledView> = order
            .iter()
            .map(|(d, t)| {
                (
                    *d,
                    ScheduledView {
                        domain: d.to_string(),
                        messages: t.messages,
                        recipients: t.recipients,
                        bytes: t.bytes,
                        oldest_age_s: t.oldest_ms().map_or(0, |o| now_ms.saturating_sub(o) / 1000),
                        next_attempt_in_s: None,
                        last_response: self.last_response.get(*d).cloned(),
                        parked: 0,
                        site: self.sites.get(*d).map(|(s, _)| s.key.to_string()),
                    },
                )
            })
            .collect();
        for (t, job) in self.waiting.values() {
            if let Some(v) = views.get_mut(job.domain.as_str()) {
                let secs = t.saturating_duration_since(now).as_secs();
                v.next_attempt_in_s = Some(v.next_attempt_in_s.map_or(secs, |n| n.min(secs)));
            }
        }
        for job in &self.parked {
            if let Some(v) = views.get_mut(job.domain.as_str()) {
                v.parked += 1;
            }
        }
        let scheduled: Vec<ScheduledView> =
            order.iter().filter_map(|(d, _)| views.remove(d)).collect();
        let ready_queues = self.destinations.len();
        let connections_out = self
            .destinations
            .values()
            .map(|d| d.stats.connections())
            .sum();
        let mut ready: Vec<ReadyView> = self
            .destinations
            .iter()
            .map(|((source, site), d)| ReadyView {
                source: source.to_string(),
                site: site.to_string(),
                queued: d.stats.queued(),
                connections: d.stats.connections(),
                outstanding: d.outstanding,
                backlog: d.backlog.len(),
                max_connections: d.limits.max_connections,
                effective_max_connections: d.stats.effective_max_connections(),
                throttle: d.stats.throttle(),
                max_messages_per_connection: d.limits.max_messages_per_connection,
                max_message_rate: d.limits.max_message_rate.map(|r| r.to_string()),
                max_connection_rate: d.limits.max_connection_rate.map(|r| r.to_string()),
            })
            .collect();
        ready.sort_by(|a, b| b.outstanding.cmp(&a.outstanding).then(a.site.cmp(&b.site)));
        if limit > 0 {
            ready.truncate(limit);
        }
        Snapshot {
            messages: self.messages.len(),
            recipients: self.stats.recipients,
            bytes: self.stats.bytes,
            scheduled_queues,
            ready_queues,
            connections_out,
            scheduled,
            ready,
            suspensions: self.suspensions.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_match_their_field_only() {
        let f = Facts {
            domain: "a.test",
            site: Some("mx.a.test"),
            source: Some("ip1"),
            campaign: "bf",
            tenant: "acme",
        };
        let by = |s: Selector| s.matches(&f);
        assert!(by(Selector {
            domain: Some("a.test".into()),
            ..Default::default()
        }));
        assert!(!by(Selector {
            domain: Some("b.test".into()),
            ..Default::default()
        }));
        assert!(by(Selector {
            site: Some("mx.a.test".into()),
            ..Default::default()
        }));
        assert!(by(Selector {
            source: Some("ip1".into()),
            ..Default::default()
        }));
        assert!(!by(Selector {
            source: Some("ip2".into()),
            ..Default::default()
        }));
        assert!(by(Selector {
            campaign: Some("bf".into()),
            ..Default::default()
        }));
        assert!(by(Selector {
            tenant: Some("acme".into()),
            ..Default::default()
        }));
        assert_eq!(
            Selector {
                domain: Some("A.Test.".into()),
                ..Default::default()
            }
            .normalized()
            .domain
            .as_deref(),
            Some("a.test")
        );
    }
}
