//! The engine's clock, injectable so that tests (ours and our users') control time.
//!
//! The engine never reads the system time directly: creation times, ids and (later) mute expiries
//! and offline grace periods all come from a [`Clock`]. Tests use [`ManualClock`] and move it
//! forward explicitly instead of sleeping or pausing tokio's time.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use roomcast_model::Timestamp;
use tokio::sync::watch;

/// A source of wall-clock time in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    /// Now, in ms since the Unix epoch.
    fn now_ms(&self) -> Timestamp;

    /// For a clock that jumps (a test clock): a receiver that changes whenever the time is set,
    /// so the engine's timers look again at once. `None` (the default) for a clock that moves
    /// with real time.
    fn changes(&self) -> Option<watch::Receiver<Timestamp>> {
        None
    }
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> Timestamp {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| {
            roomcast_model::ms_to_timestamp(roomcast_model::duration_ms(d))
        })
    }
}

/// A clock that moves only when told to. Cloning is shallow: clones share one time.
///
/// The engine's timers (offline grace periods) follow it: moving it past a deadline fires the
/// deadline at once, so a test of a 5-minute grace period takes no time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: std::sync::Arc<AtomicI64>,
    changes: std::sync::Arc<watch::Sender<Timestamp>>,
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::new(0)
    }
}

impl ManualClock {
    /// A clock standing at `start_ms`.
    pub fn new(start_ms: Timestamp) -> ManualClock {
        ManualClock {
            now: std::sync::Arc::new(AtomicI64::new(start_ms)),
            changes: std::sync::Arc::new(watch::channel(start_ms).0),
        }
    }

    /// Moves the clock forward by `by` (saturating at the end of time).
    pub fn advance(&self, by: Duration) {
        let by = roomcast_model::ms_to_timestamp(roomcast_model::duration_ms(by));
        let before = self
            .now
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| {
                Some(t.saturating_add(by))
            })
            .unwrap_or_else(|t| t);
        self.changes.send_replace(before.saturating_add(by));
    }

    /// Sets the clock to `ms`.
    pub fn set(&self, ms: Timestamp) {
        self.now.store(ms, Ordering::SeqCst);
        self.changes.send_replace(ms);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> Timestamp {
        self.now.load(Ordering::SeqCst)
    }

    fn changes(&self) -> Option<watch::Receiver<Timestamp>> {
        Some(self.changes.subscribe())
    }
}
