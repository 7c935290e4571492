//! The engine's timers: deadlines on the engine's [`Clock`], fired by one task.
//!
//! Rooms schedule checks (an offline member's grace period) here instead of running a timer
//! each. One task on the callback runtime keeps a heap of deadlines and, when one is due by the
//! engine clock, sends the room its check. It wakes when the earliest deadline is due in real
//! time, when a new deadline is scheduled, and when a [`crate::ManualClock`] is moved, so tests
//! drive grace periods by moving the clock, never by sleeping.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use roomcast_model::{RoomId, Timer, Timestamp, UserId};
use tokio::sync::Notify;

use crate::room_actor::{ExpireMute, ExpireOffline};
use crate::{SessionKey, Shared};

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Due {
    at: Timestamp,
    room: RoomId,
    user: UserId,
    mute: bool,
}

#[derive(Default)]
pub(crate) struct Timers {
    heap: Mutex<BinaryHeap<Reverse<Due>>>,
    changed: Notify,
}

impl Timers {
    /// Asks `room` to run `timer`'s check when it is due (engine clock).
    pub(crate) fn schedule(&self, room: RoomId, timer: Timer) {
        let due = match timer {
            Timer::OfflineCheck { user, at } => Due {
                at,
                room,
                user,
                mute: false,
            },
            Timer::MuteExpiry { user, at } => Due {
                at,
                room,
                user,
                mute: true,
            },
        };
        self.heap.lock().push(Reverse(due));
        self.changed.notify_one();
    }

    pub(crate) fn stop(&self) {
        self.heap.lock().clear();
    }
}

/// How often (engine clock) idle state is swept.
const SWEEP_EVERY_MS: Timestamp = 60_000;

/// Forgets what idle users no longer need: their session (no client, no room, nothing in
/// flight) and their rate-limiter state. A session is dropped only when the session table holds
/// the last reference to it: a client, a room (through its shard) or a call in progress all hold
/// one, and a lookup needs the table's lock, which the sweep holds.
pub(crate) fn sweep(shared: &Shared) {
    let before = shared.sessions.read().len();
    shared
        .sessions
        .write()
        .retain(|SessionKey(s)| Arc::strong_count(s) > 1);
    let after = shared.sessions.read().len();
    if after < before {
        tracing::debug!(dropped = before - after, "idle sessions dropped");
    }
    if let Some(limiter) = &shared.api_limiter {
        limiter.retain_recent();
    }
}

/// Runs until the engine's runtime shuts down.
pub(crate) async fn run(shared: Arc<Shared>) {
    let mut clock_changes = shared.clock.changes();
    let mut last_sweep = shared.clock.now_ms();
    loop {
        if shared.clock.now_ms() - last_sweep >= SWEEP_EVERY_MS {
            sweep(&shared);
            last_sweep = shared.clock.now_ms();
        }
        let now = shared.clock.now_ms();
        let next = {
            let mut heap = shared.timers.heap.lock();
            let mut due = Vec::new();
            while heap.peek().is_some_and(|Reverse(d)| d.at <= now) {
                if let Some(Reverse(d)) = heap.pop() {
                    due.push(d);
                }
            }
            drop(heap);
            for d in due {
                if let Some(addr) = shared.directory.get(d.room).and_then(|e| e.live_actor()) {
                    if d.mute {
                        addr.do_send(ExpireMute { user: d.user });
                    } else {
                        addr.do_send(ExpireOffline { user: d.user });
                    }
                }
            }
            shared.timers.heap.lock().peek().map(|Reverse(d)| d.at)
        };
        // Sleep until the earliest deadline in real time (at most a second, so that a clock
        // that jumps is noticed), or until something changes.
        let wait = next.map_or(Duration::from_secs(1), |at| {
            Duration::from_millis((at - now).clamp(1, 1_000) as u64)
        });
        match &mut clock_changes {
            Some(changes) => {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shared.timers.changed.notified() => {}
                    r = changes.changed() => if r.is_err() { clock_changes = None; },
                }
            }
            None => {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shared.timers.changed.notified() => {}
                }
            }
        }
    }
}
