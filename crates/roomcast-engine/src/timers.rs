//! The engine's timers: deadlines on the engine's [`Clock`], fired by one task.
//!
//! Rooms schedule checks (an offline member's grace period) here instead of running a timer
//! each. One task on the callback runtime keeps a heap of deadlines and, when one is due by the
//! engine clock, sends the room its check. It wakes when the earliest deadline is due in real
//! time, when a new deadline is scheduled, and when a [`crate::ManualClock`] is moved, so tests
//! drive grace periods by moving the clock, never by sleeping.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use roomcast_model::{RoomId, Timer, TimerKind, Timestamp, UserId};
use tokio::sync::Notify;

use crate::room_actor::{ExpireBlock, ExpireFreeze, ExpireMute, ExpireOffline, ReleaseHeld};
use crate::{SessionKey, Shared};

/// A pending deadline, in due order.
type Due = (Timestamp, RoomId, UserId, TimerKind);

/// Pending deadlines: at most one per (room, member, kind). Scheduling replaces, cancelling
/// removes, so the set holds only deadlines that can still matter: its size follows the live
/// mutes and offline members, not the history of moderation and reconnects.
#[derive(Default)]
struct Pending {
    due: BTreeSet<Due>,
    by_room: HashMap<RoomId, HashMap<(UserId, TimerKind), Timestamp>>,
}

impl Pending {
    fn remove(&mut self, room: RoomId, user: &UserId, kind: TimerKind) {
        if let Some(keys) = self.by_room.get_mut(&room) {
            if let Some(at) = keys.remove(&(user.clone(), kind)) {
                self.due.remove(&(at, room, user.clone(), kind));
            }
            if keys.is_empty() {
                self.by_room.remove(&room);
            }
        }
    }
}

#[derive(Default)]
pub(crate) struct Timers {
    pending: Mutex<Pending>,
    changed: Notify,
    stopped: std::sync::atomic::AtomicBool,
}

impl Timers {
    /// Asks `room` to run `timer`'s check when it is due (engine clock), replacing the pending
    /// check of the same member and kind.
    pub(crate) fn schedule(&self, room: RoomId, timer: Timer) {
        let (user, kind, at) = timer.parts();
        {
            let mut pending = self.pending.lock();
            pending.remove(room, &user, kind);
            pending
                .by_room
                .entry(room)
                .or_default()
                .insert((user.clone(), kind), at);
            pending.due.insert((at, room, user.clone(), kind));
        }
        self.changed.notify_one();
    }

    /// Forgets `user`'s pending check of `kind` in `room`, if any.
    pub(crate) fn cancel(&self, room: RoomId, user: &UserId, kind: TimerKind) {
        self.pending.lock().remove(room, user, kind);
    }

    /// Forgets every pending check of `room` (it was destroyed).
    pub(crate) fn cancel_room(&self, room: RoomId) {
        let mut pending = self.pending.lock();
        if let Some(keys) = pending.by_room.remove(&room) {
            for ((user, kind), at) in keys {
                pending.due.remove(&(at, room, user, kind));
            }
        }
    }

    /// How many checks are pending (for tests and reports).
    pub(crate) fn len(&self) -> usize {
        self.pending.lock().due.len()
    }

    /// Takes the checks due at `now`.
    fn take_due(&self, now: Timestamp) -> Vec<Due> {
        let mut pending = self.pending.lock();
        let mut due = Vec::new();
        while pending.due.first().is_some_and(|d| d.0 <= now) {
            if let Some(d) = pending.due.pop_first() {
                if let Some(keys) = pending.by_room.get_mut(&d.1) {
                    keys.remove(&(d.2.clone(), d.3));
                    if keys.is_empty() {
                        pending.by_room.remove(&d.1);
                    }
                }
                due.push(d);
            }
        }
        due
    }

    /// When the next check is due.
    fn next_due(&self) -> Option<Timestamp> {
        self.pending.lock().due.first().map(|d| d.0)
    }

    /// Forgets every check and ends the timers' task.
    pub(crate) fn stop(&self) {
        *self.pending.lock() = Pending::default();
        self.stopped
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.changed.notify_one();
    }
}

/// How often (engine clock) idle state is swept.
const SWEEP_EVERY_MS: Timestamp = 60_000;

/// Forgets what idle users no longer need: their session (no client, no room, nothing in
/// flight) and their rate-limiter state. A session is dropped only when the session table holds
/// the last reference to it: a client, a room (through its shard) or a call in progress all hold
/// one, and a lookup needs the table's lock, which the sweep holds.
pub(crate) fn sweep(shared: &Shared, now: Timestamp) {
    let before = shared.sessions.read().len();
    shared
        .sessions
        .write()
        .retain(|SessionKey(s)| Arc::strong_count(s) > 1);
    let after = shared.sessions.read().len();
    if after < before {
        tracing::debug!(dropped = before - after, "idle sessions dropped");
    }
    if let Some(after) = shared.limits.room_hibernate_after {
        let idle_before = now.saturating_sub(roomcast_model::ms_to_timestamp(
            roomcast_model::duration_ms(after),
        ));
        for addr in shared.directory.idle_actors(idle_before) {
            addr.do_send(crate::room_actor::Hibernate { idle_before });
        }
    }
    if let Some(limiter) = &shared.api_limiter {
        limiter.retain_recent();
    }
}

/// Runs until the engine's runtime shuts down.
pub(crate) async fn run(shared: Arc<Shared>) {
    let mut clock_changes = shared.clock.changes();
    // The first round sweeps at once: a clock moved before this task first ran (a test's
    // `ManualClock`, a busy machine) must not push the first sweep a whole period later.
    let mut last_sweep = Timestamp::MIN;
    loop {
        if shared
            .timers
            .stopped
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        // The sweep's time is the one it judges idleness by: a clock that moves while it runs
        // (a test's `ManualClock`) is swept again at its new time, not skipped.
        let now = shared.clock.now_ms();
        if now.saturating_sub(last_sweep) >= SWEEP_EVERY_MS {
            sweep(&shared, now);
            last_sweep = now;
        }
        let now = shared.clock.now_ms();
        let due = shared.timers.take_due(now);
        for (_, room, user, kind) in due {
            if let Some(addr) = shared.directory.get(room).and_then(|e| e.live_actor()) {
                match kind {
                    TimerKind::MuteExpiry => addr.do_send(ExpireMute { user }),
                    TimerKind::OfflineCheck => addr.do_send(ExpireOffline { user }),
                    TimerKind::FreezeEnd => addr.do_send(ExpireFreeze),
                    TimerKind::BlockEnd => addr.do_send(ExpireBlock { user }),
                    TimerKind::HoldRelease => addr.do_send(ReleaseHeld),
                }
            }
        }
        let next = shared.timers.next_due();
        // Sleep until the earliest deadline in real time (at most a second, so that a clock
        // that jumps is noticed), or until something changes.
        let wait = next.map_or(Duration::from_secs(1), |at| {
            Duration::from_millis(at.saturating_sub(now).clamp(1, 1_000) as u64)
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
