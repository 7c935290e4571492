//! The engine's clock, injectable so that tests (ours and our users') control time.
//!
//! The engine never reads the system time directly: creation times, ids and (later) mute expiries
//! and offline grace periods all come from a [`Clock`]. Tests use [`ManualClock`] and move it
//! forward explicitly instead of sleeping or pausing tokio's time.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use roomcast_model::Timestamp;

/// A source of wall-clock time in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    /// Now, in ms since the Unix epoch.
    fn now_ms(&self) -> Timestamp;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> Timestamp {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as Timestamp)
    }
}

/// A clock that moves only when told to. Cloning is shallow: clones share one time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    now: std::sync::Arc<AtomicI64>,
}

impl ManualClock {
    /// A clock standing at `start_ms`.
    pub fn new(start_ms: Timestamp) -> ManualClock {
        ManualClock {
            now: std::sync::Arc::new(AtomicI64::new(start_ms)),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.now.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }

    /// Sets the clock to `ms`.
    pub fn set(&self, ms: Timestamp) {
        self.now.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> Timestamp {
        self.now.load(Ordering::SeqCst)
    }
}
