//! Waiting between attempts to reach a dependency.

use std::time::Duration;

/// Exponential backoff with full jitter, for reconnect loops.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self { next: initial, max }
    }

    pub fn next_delay(&mut self) -> Duration {
        let current = self.next;
        self.next = (self.next * 2).min(self.max);
        // Jitter spreads reconnects of many instances after a shared outage.
        let jitter = rand::random_range(0.5..=1.0);
        current.mul_f64(jitter)
    }
}
