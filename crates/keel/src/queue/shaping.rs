//! Reply-driven shaping: the queue manager's side of traffic shaping.
//!
//! Every reply a destination sends that is not a success is checked against the reply rules
//! (`[shaping] reply_rules`, built-in set for the largest providers). The first rule that
//! matches counts a hit for (rule, egress source, site); once its trigger threshold is reached
//! (default: the first hit) the rule acts on that source's traffic to that site:
//!
//! - `suspend`: a suspension of (site, source) for the rule's duration; queued jobs wait;
//! - `throttle`: the ready queue delivers at most the rule's rate for the duration;
//! - `bounce`: every queued recipient for the site fails (an `AdminBounce`-like event each).
//!
//! Each action is one `ShapingAction` event with the rule, the reply and what was done. While
//! an action is in force the same rule does not fire again for the same source and site.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::SystemTime;

use keel_config::RuleAction;
use tokio::time::Instant;

use super::QueueManager;
use super::admin::Selector;
use crate::delivery::DestMsg;
use crate::delivery::site::Site;
use crate::events::{self, Event, Kind, Response};

/// Hit counters and active actions, per (rule index, source, site).
#[derive(Default)]
pub(crate) struct RuleState {
    hits: HashMap<(usize, Arc<str>, Arc<str>), VecDeque<Instant>>,
    active_until: HashMap<(usize, Arc<str>, Arc<str>), Instant>,
}

impl RuleState {
    /// Forgets actions that ended and hits older than any trigger window (an hour at most).
    pub(crate) fn prune(&mut self, now: Instant) {
        self.active_until.retain(|_, until| *until > now);
        self.hits.retain(|_, hits| {
            hits.back()
                .is_some_and(|&t| now.duration_since(t) < std::time::Duration::from_secs(3600))
        });
    }
}

impl QueueManager {
    /// Checks one failure reply from `site` via `source` against the reply rules.
    pub(crate) fn check_reply_rules(
        &mut self,
        domain: &str,
        site: &Arc<Site>,
        source: &Arc<str>,
        response: &Response,
    ) {
        if response.code == 0 {
            // A local condition (connection refused, timeout), not a reply: adaptive shaping
            // reacts to those, rules do not.
            return;
        }
        let cfg = self.cfg.clone();
        let Some((idx, rule)) = cfg.shaping.reply_rules.iter().enumerate().find(|(_, r)| {
            r.matches(
                &site.mx_hosts,
                response.code,
                &response.enhanced,
                &response.text,
            )
        }) else {
            return;
        };
        let now = Instant::now();
        let key = (idx, source.clone(), site.key.clone());
        if self
            .rule_state
            .active_until
            .get(&key)
            .is_some_and(|&until| until > now)
        {
            return;
        }
        if let Some((count, window)) = rule.trigger {
            let hits = self.rule_state.hits.entry(key.clone()).or_default();
            hits.push_back(now);
            while hits
                .front()
                .is_some_and(|&t| now.duration_since(t) > window)
            {
                hits.pop_front();
            }
            if (hits.len() as u32) < count {
                return;
            }
            hits.clear();
        }
        self.rule_state
            .active_until
            .insert(key, now + rule.duration);
        let duration = humantime_short(rule.duration);
        let action = match &rule.action {
            RuleAction::Suspend => {
                let selector = Selector {
                    site: Some(site.key.to_string()),
                    source: Some(source.to_string()),
                    ..Selector::default()
                };
                self.suspend(
                    selector,
                    Some(rule.duration),
                    format!(
                        "reply rule {}: {} {} {}",
                        rule.name, response.code, response.enhanced, response.text
                    ),
                );
                format!("suspend for {duration} (reply rule {})", rule.name)
            }
            RuleAction::Throttle(rate) => {
                if let Some(d) = self.destinations.get(&(source.clone(), site.key.clone())) {
                    let _ = d.tx.send(DestMsg::Throttle {
                        rate: *rate,
                        until: now + rule.duration,
                    });
                }
                format!(
                    "throttle to {rate} for {duration} (reply rule {})",
                    rule.name
                )
            }
            RuleAction::Bounce => {
                let selector = Selector {
                    site: Some(site.key.to_string()),
                    ..Selector::default()
                };
                let r = self.bounce(
                    &selector,
                    false,
                    &format!(
                        "reply rule {}: {} {}",
                        rule.name, response.code, response.text
                    ),
                );
                format!(
                    "bounce {} queued recipients (reply rule {})",
                    r.recipients, rule.name
                )
            }
        };
        tracing::warn!(site = %site.key, %source, %action, reply = %response.text, "shaping action");
        self.emit_shaping_event(domain, &site.key, source, Some(response.clone()), action);
    }

    /// One `ShapingAction` event.
    pub(crate) fn emit_shaping_event(
        &self,
        domain: &str,
        site: &str,
        source: &str,
        response: Option<Response>,
        action: String,
    ) {
        self.events.emit(Event {
            kind: Kind::ShapingAction,
            time: events::rfc3339(SystemTime::now()),
            id: String::new(),
            sender: String::new(),
            recipient: String::new(),
            size: 0,
            queue: domain.to_string(),
            site: site.to_string(),
            source: source.to_string(),
            attempt: 0,
            response,
            peer: String::new(),
            queue_time_ms: 0,
            action: Some(action),
        });
    }
}

/// `1h`, `30m`, `45s`: durations as the rules file writes them.
fn humantime_short(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}
