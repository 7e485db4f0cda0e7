//! The envelope Keel keeps for each spooled message.
//!
//! The spool stores envelopes as opaque bytes; this module owns their meaning and encoding
//! (postcard, behind a leading format-version byte so later releases can read older spools).
//! The envelope is rewritten (`Spool::update`) as recipients finish, so a restart neither loses
//! a recipient nor re-sends to one that was already delivered or bounced.

use serde::{Deserialize, Serialize};

/// Format version written as the first byte of every encoded envelope.
/// 1: first release; 2: adds `pool`, `campaign`, `tenant`.
const VERSION: u8 = 2;

/// A recipient and how far it has got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    /// `local@domain`, domain normalised (lower case, no trailing dot).
    pub address: String,
    /// True once delivered, bounced or expired: never attempted again.
    pub done: bool,
    /// Delivery attempts made for this recipient so far (across restarts).
    pub attempts: u32,
}

impl Recipient {
    /// The destination domain (what the scheduled queues are keyed by).
    pub fn domain(&self) -> &str {
        self.address.rsplit_once('@').map_or("", |(_, d)| d)
    }
}

/// Everything about a message except its body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Reverse path; empty for the null sender `<>`.
    pub sender: String,
    pub recipients: Vec<Recipient>,
    /// Wall-clock reception time, milliseconds since the Unix epoch (drives `max_age`).
    pub received_at_ms: u64,
    /// Client address (`ip:port`) it came from, for events.
    pub peer: String,
    /// Body size in octets.
    pub size: u64,
    /// Egress pool to deliver through (`X-Keel-Pool`); empty: the default pool.
    pub pool: String,
    /// Campaign id (`X-Keel-Campaign`); empty when none.
    pub campaign: String,
    /// Tenant (`X-Keel-Tenant`, or the authenticated user's tenant); empty when none.
    pub tenant: String,
}

/// The version-1 layout, still read from spools written by the first release.
#[derive(Deserialize)]
struct EnvelopeV1 {
    sender: String,
    recipients: Vec<Recipient>,
    received_at_ms: u64,
    peer: String,
    size: u64,
}

/// An envelope that cannot be decoded (written by a newer release, or damaged).
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("envelope format version {0} is not supported by this release")]
    Version(u8),
    #[error("envelope is empty")]
    Empty,
    #[error("envelope does not decode: {0}")]
    Decode(#[from] postcard::Error),
}

impl Envelope {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        // Serialising plain owned data into a Vec cannot fail.
        out.extend(postcard::to_allocvec(self).unwrap_or_default());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
        match bytes.split_first() {
            None => Err(EnvelopeError::Empty),
            Some((&VERSION, rest)) => Ok(postcard::from_bytes(rest)?),
            Some((&1, rest)) => {
                let v1: EnvelopeV1 = postcard::from_bytes(rest)?;
                Ok(Envelope {
                    sender: v1.sender,
                    recipients: v1.recipients,
                    received_at_ms: v1.received_at_ms,
                    peer: v1.peer,
                    size: v1.size,
                    pool: String::new(),
                    campaign: String::new(),
                    tenant: String::new(),
                })
            }
            Some((&v, _)) => Err(EnvelopeError::Version(v)),
        }
    }

    /// True when no recipient is left to attempt.
    pub fn is_finished(&self) -> bool {
        self.recipients.iter().all(|r| r.done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_version_check() {
        let e = Envelope {
            sender: "a@b.test".into(),
            recipients: vec![Recipient {
                address: "c@d.test".into(),
                done: false,
                attempts: 3,
            }],
            received_at_ms: 42,
            peer: "127.0.0.1:9".into(),
            size: 10,
            pool: "p".into(),
            campaign: "c".into(),
            tenant: "t".into(),
        };
        let bytes = e.encode();
        assert_eq!(Envelope::decode(&bytes).unwrap(), e);
        let mut future = bytes.clone();
        future[0] = 9;
        assert!(matches!(
            Envelope::decode(&future),
            Err(EnvelopeError::Version(9))
        ));
        assert!(Envelope::decode(&[]).is_err());
        // A version-1 envelope (no pool/campaign/tenant) still decodes.
        #[derive(Serialize)]
        struct V1<'a>(&'a str, &'a [Recipient], u64, &'a str, u64);
        let mut v1 = vec![1u8];
        v1.extend(postcard::to_allocvec(&V1(&e.sender, &e.recipients, 42, &e.peer, 10)).unwrap());
        let old = Envelope::decode(&v1).unwrap();
        assert_eq!(old.recipients, e.recipients);
        assert_eq!(old.pool, "");
        assert_eq!(e.recipients[0].domain(), "d.test");
    }
}
