//! A job queue that is fair between traffic classes: the scheduled-queue key.
//!
//! Jobs are kept per class — (campaign, tenant) — and handed out round-robin across classes,
//! in order within each. A million-message campaign and a transactional message for the same
//! site therefore do not wait in one line: each class gets its turn, so the small one goes out
//! next instead of after the million. Used by the ready queues (what goes to a connection
//! next) and by the queue manager's overflow (what enters a full ready queue next).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::Job;

/// Round-robin over classes, FIFO within a class.
#[derive(Debug, Default)]
pub struct FairQueue {
    classes: HashMap<Arc<str>, VecDeque<Job>>,
    /// Classes with jobs, in turn order.
    turn: VecDeque<Arc<str>>,
    len: usize,
}

impl FairQueue {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn push_back(&mut self, job: Job) {
        let q = self.classes.entry(job.class.clone()).or_default();
        if q.is_empty() {
            self.turn.push_back(job.class.clone());
        }
        q.push_back(job);
        self.len += 1;
    }

    /// Puts a job back at the head of its class, and its class first in turn.
    pub fn push_front(&mut self, job: Job) {
        let q = self.classes.entry(job.class.clone()).or_default();
        if q.is_empty() {
            self.turn.push_front(job.class.clone());
        } else if let Some(pos) = self.turn.iter().position(|c| *c == job.class) {
            let c = self.turn.remove(pos);
            if let Some(c) = c {
                self.turn.push_front(c);
            }
        }
        q.push_front(job);
        self.len += 1;
    }

    /// The next job: the head of the class whose turn it is.
    pub fn pop_front(&mut self) -> Option<Job> {
        let class = self.turn.pop_front()?;
        let q = self.classes.get_mut(&class)?;
        let job = q.pop_front();
        if q.is_empty() {
            self.classes.remove(&class);
        } else {
            self.turn.push_back(class);
        }
        if job.is_some() {
            self.len -= 1;
        }
        job
    }

    /// Removes and returns every job for which `take` is true, keeping the others in order.
    pub fn take_where(&mut self, mut take: impl FnMut(&Job) -> bool) -> Vec<Job> {
        let mut taken = Vec::new();
        for q in self.classes.values_mut() {
            let (t, keep): (Vec<Job>, Vec<Job>) = q.drain(..).partition(|j| take(j));
            taken.extend(t);
            *q = keep.into();
        }
        self.classes.retain(|_, q| !q.is_empty());
        let classes = &self.classes;
        self.turn.retain(|c| classes.contains_key(c));
        self.len -= taken.len();
        taken
    }

    /// Removes every job.
    pub fn drain_all(&mut self) -> Vec<Job> {
        self.take_where(|_| true)
    }
}

/// The class key of a message: campaign and tenant (either may be empty).
pub fn class_of(campaign: &str, tenant: &str) -> Arc<str> {
    Arc::from(format!("{campaign}\u{1f}{tenant}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn job(class: &str, id: u128) -> Job {
        Job {
            id,
            domain: "d".into(),
            rcpts: vec![0],
            addresses: vec!["a@d".into()],
            sender: Arc::from(""),
            source: Arc::from(""),
            site: None,
            size: 1,
            class: Arc::from(class),
            attempt: 1,
            expires_at: tokio::time::Instant::now(),
        }
    }

    #[tokio::test]
    async fn a_big_class_does_not_starve_a_small_one() {
        let mut q = FairQueue::default();
        for i in 0..1000 {
            q.push_back(job("campaign", i));
        }
        q.push_back(job("transactional", 5000));
        let first_two: Vec<u128> = (0..2).map(|_| q.pop_front().unwrap().id).collect();
        assert_eq!(first_two, [0, 5000]);
        assert_eq!(q.len(), 999);
        // Order within a class is kept.
        assert_eq!(q.pop_front().unwrap().id, 1);
    }

    #[tokio::test]
    async fn push_front_and_take_where() {
        let mut q = FairQueue::default();
        q.push_back(job("a", 1));
        q.push_back(job("b", 2));
        q.push_back(job("a", 3));
        let j = q.pop_front().unwrap();
        assert_eq!(j.id, 1);
        q.push_front(j);
        assert_eq!(q.pop_front().unwrap().id, 1);
        let taken = q.take_where(|j| j.id == 3);
        assert_eq!(taken.len(), 1);
        assert_eq!(q.len(), 1);
        assert_eq!(q.pop_front().unwrap().id, 2);
        assert!(q.pop_front().is_none());
        assert!(q.is_empty());
    }
}
