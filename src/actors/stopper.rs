//! Stopping a background task (the Activity bridge, the series extender,
//! the reminder scheduler): a flag that stays set, and a wake for whatever
//! the task is waiting on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

#[derive(Default)]
pub struct Stopper {
    stopping: AtomicBool,
    stop: Notify,
}

impl Stopper {
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.stop.notify_waiters();
    }

    pub fn stopped(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Completes when [`Stopper::stop`] is called after this.
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.stop.notified()
    }

    /// Sleeps `d`; false when stopped meanwhile.
    pub async fn pause(&self, d: Duration) -> bool {
        let stop = self.stop.notified();
        if self.stopped() {
            return false;
        }
        tokio::select! {
            () = tokio::time::sleep(d) => !self.stopped(),
            () = stop => false,
        }
    }
}
