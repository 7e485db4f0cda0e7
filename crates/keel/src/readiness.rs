//! Whether this node should be sent mail: the state behind `GET /readyz`.
//!
//! A load balancer polls `/readyz` to decide where connections go. Keel is not ready while it
//! recovers its spool (the SMTP listeners are not bound yet, so a connection would be
//! refused) and stops being ready as soon as it starts draining for shutdown, so the
//! balancer takes the node out before it refuses mail. `/healthz` stays "alive" throughout.
//! While ready, ingress back-pressure ([`crate::ingress::backpressure`]) also makes `/readyz`
//! answer 503 with its stage: a node shedding mail should not be sent more.
//! Two atomics, set by `serve` and the back-pressure monitor, read by the HTTP handler; no lock.

use std::sync::atomic::{AtomicU8, Ordering};

use crate::ingress::backpressure::Stage;

/// The daemon's phase, as `/readyz` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Opening and recovering the spool, binding listeners.
    Recovering,
    /// Accepting mail.
    Ready,
    /// Shutting down: listeners closed, finishing what is in flight.
    Draining,
}

impl Phase {
    /// The word `/readyz` answers with.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Recovering => "recovering",
            Phase::Ready => "ready",
            Phase::Draining => "draining",
        }
    }
}

/// Shared between `serve` (which moves it forward) and the HTTP handler.
#[derive(Debug)]
pub struct Readiness(AtomicU8, AtomicU8);

impl Default for Readiness {
    fn default() -> Self {
        Readiness(
            AtomicU8::new(Phase::Recovering as u8),
            AtomicU8::new(Stage::Normal as u8),
        )
    }
}

impl Readiness {
    pub fn set(&self, phase: Phase) {
        self.0.store(phase as u8, Ordering::Release);
    }

    /// The ingress back-pressure stage (normal unless the monitor says otherwise).
    pub fn set_stage(&self, stage: Stage) {
        self.1.store(stage as u8, Ordering::Release);
    }

    pub fn stage(&self) -> Stage {
        Stage::from_u8(self.1.load(Ordering::Acquire))
    }

    pub fn get(&self) -> Phase {
        match self.0.load(Ordering::Acquire) {
            x if x == Phase::Ready as u8 => Phase::Ready,
            x if x == Phase::Draining as u8 => Phase::Draining,
            _ => Phase::Recovering,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_recovering_then_moves_on() {
        let r = Readiness::default();
        assert_eq!(r.get(), Phase::Recovering);
        r.set(Phase::Ready);
        assert_eq!(r.get().as_str(), "ready");
        r.set(Phase::Draining);
        assert_eq!(r.get(), Phase::Draining);
    }
}
