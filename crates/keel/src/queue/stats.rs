//! Per-domain queue statistics, kept up to date as messages arrive and recipients finish, so
//! the queue summary (and later the metrics) costs O(domains), not O(messages).

use std::collections::{BTreeMap, HashMap};

use crate::envelope::Envelope;

/// What is queued for one destination domain.
#[derive(Debug, Default)]
pub struct DomainStats {
    /// Messages with at least one pending recipient in this domain.
    pub messages: usize,
    pub recipients: usize,
    pub bytes: u64,
    /// Reception times (ms) of those messages, as a multiset: the first key is the oldest.
    received: BTreeMap<u64, u32>,
}

impl DomainStats {
    /// Reception time of the oldest message, if any.
    pub fn oldest_ms(&self) -> Option<u64> {
        self.received.keys().next().copied()
    }
}

/// Statistics for every domain with pending recipients.
#[derive(Debug, Default)]
pub struct QueueStats {
    pub domains: HashMap<String, DomainStats>,
    pub recipients: usize,
    pub bytes: u64,
}

impl QueueStats {
    /// A message enters the queue with its pending recipients.
    pub fn add(&mut self, envelope: &Envelope) {
        self.bytes += envelope.size;
        let mut seen: Vec<&str> = Vec::new();
        for r in envelope.recipients.iter().filter(|r| !r.done) {
            let d = r.domain();
            self.recipients += 1;
            let s = self.domains.entry(d.to_string()).or_default();
            s.recipients += 1;
            if !seen.contains(&d) {
                seen.push(d);
                s.messages += 1;
                s.bytes += envelope.size;
                *s.received.entry(envelope.received_at_ms).or_default() += 1;
            }
        }
    }

    /// Recipient `idx` of `envelope` has just been marked done.
    pub fn recipient_done(&mut self, envelope: &Envelope, idx: usize) {
        let Some(r) = envelope.recipients.get(idx) else {
            return;
        };
        let d = r.domain();
        self.recipients = self.recipients.saturating_sub(1);
        let Some(s) = self.domains.get_mut(d) else {
            return;
        };
        s.recipients = s.recipients.saturating_sub(1);
        let others = envelope
            .recipients
            .iter()
            .any(|o| !o.done && o.domain() == d);
        if !others {
            s.messages = s.messages.saturating_sub(1);
            s.bytes = s.bytes.saturating_sub(envelope.size);
            if let Some(n) = s.received.get_mut(&envelope.received_at_ms) {
                *n -= 1;
                if *n == 0 {
                    s.received.remove(&envelope.received_at_ms);
                }
            }
        }
        if s.recipients == 0 {
            self.domains.remove(d);
        }
    }

    /// A message leaves the queue (all recipients done).
    pub fn removed(&mut self, envelope: &Envelope) {
        self.bytes = self.bytes.saturating_sub(envelope.size);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Recipient;

    fn env(rcpts: &[&str], at: u64) -> Envelope {
        Envelope {
            sender: "s@x".into(),
            recipients: rcpts
                .iter()
                .map(|a| Recipient {
                    address: a.to_string(),
                    done: false,
                    attempts: 0,
                })
                .collect(),
            received_at_ms: at,
            peer: String::new(),
            size: 100,
            pool: String::new(),
            campaign: String::new(),
            tenant: String::new(),
        }
    }

    #[test]
    fn tracks_counts_and_oldest_as_recipients_finish() {
        let mut q = QueueStats::default();
        let mut a = env(&["1@a.test", "2@a.test", "3@b.test"], 10);
        let b = env(&["4@a.test"], 20);
        q.add(&a);
        q.add(&b);
        let da = &q.domains["a.test"];
        assert_eq!(
            (da.messages, da.recipients, da.bytes, da.oldest_ms()),
            (2, 3, 200, Some(10))
        );
        a.recipients[0].done = true;
        q.recipient_done(&a, 0);
        assert_eq!(q.domains["a.test"].messages, 2);
        a.recipients[1].done = true;
        q.recipient_done(&a, 1);
        let da = &q.domains["a.test"];
        assert_eq!(
            (da.messages, da.recipients, da.oldest_ms()),
            (1, 1, Some(20))
        );
        a.recipients[2].done = true;
        q.recipient_done(&a, 2);
        assert!(!q.domains.contains_key("b.test"));
        q.removed(&a);
        assert_eq!((q.recipients, q.bytes), (1, 100));
    }
}
