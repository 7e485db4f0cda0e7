//! The unit of delivery work and its outcome.

use std::sync::Arc;

use tokio::time::Instant;

use crate::delivery::site::Site;
use crate::events::Response;

/// One delivery attempt's worth of work: a message's pending recipients in one domain.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: u128,
    /// Destination domain (the scheduled queue's key).
    pub domain: String,
    /// Indexes into the envelope's recipient list.
    pub rcpts: Vec<usize>,
    /// The addresses of `rcpts`, in the same order.
    pub addresses: Vec<String>,
    pub sender: Arc<str>,
    /// Egress source chosen from the message's pool.
    pub source: Arc<str>,
    /// The site, once the domain is resolved (set when the job is dispatched).
    pub site: Option<Arc<Site>>,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// Message size in octets (for the ready queues' byte bound).
    pub size: u64,
    /// Traffic class (campaign, tenant): queues are fair between classes.
    pub class: Arc<str>,
    /// When the message passes `max_age`: a job still waiting then is expired, not attempted.
    pub expires_at: Instant,
}

/// How one recipient's attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Delivered,
    /// 4xx, connection or DNS trouble: retry later.
    Transient,
    /// 5xx, null MX, non-existent domain: bounce.
    Permanent,
    /// `max_age` passed before it could be attempted.
    Expired,
}

/// The result for one recipient of a job.
#[derive(Debug, Clone)]
pub struct RcptResult {
    pub status: Status,
    pub response: Response,
}

/// The result of a job, sent back to the queue manager.
#[derive(Debug)]
pub struct Outcome {
    pub job: Job,
    /// One per entry of `job.rcpts`, same order.
    pub results: Vec<RcptResult>,
    /// MX host or smarthost name tried (empty if none was reached).
    pub site: String,
    /// `ip:port` of the server that answered (empty if none).
    pub peer: String,
}

impl Outcome {
    /// Every recipient of `job` ends the same way.
    pub fn all(job: Job, status: Status, response: Response, site: String, peer: String) -> Self {
        let results = job
            .rcpts
            .iter()
            .map(|_| RcptResult {
                status,
                response: response.clone(),
            })
            .collect();
        Outcome {
            job,
            results,
            site,
            peer,
        }
    }
}
