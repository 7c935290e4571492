//! Cluster mode (the `cluster` feature): one room across several nodes, on NATS JetStream.
//!
//! - **Ownership.** Each room has one owning node at a time, holding the room's lease (a
//!   JetStream key-value entry with a TTL, taken with compare-and-set and renewed by a keeper).
//!   The owner runs the room's actor, which orders its commands as on one node.
//! - **State.** Every write set of the owner also goes to the room's log (a JetStream stream,
//!   one subject per room), appended with the log's last sequence number as a fence; a call is
//!   answered `Ok` only once the log acknowledged it. A node that takes a room replays its log
//!   into its local store first, so a room outlives its owner.
//! - **Calls.** A call for a room another node owns is forwarded to that node (request and
//!   reply) and runs there as if made locally.
//! - **Deliveries.** The owner delivers to its own members directly, and publishes every
//!   delivery for members on other nodes once, on the room's subject, as soon as the room's log
//!   holds the writes made before it (so another node never shows what a new owner would not
//!   find in the log); each node with members in the room (its [`Mirror`]) fans it out to them
//!   through its own shards.
//! - **Failover.** A node with members in a room whose lease lapsed takes it over: it replays
//!   the log, announces itself (`Delivery::Owner`), and the other nodes tell it who of theirs is
//!   in the room (`Call::Rejoin`); those members get `on_chat_room_recovered`.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use parking_lot::Mutex;
use roomcast_cluster::{Bytes, Cluster, ClusterConfig, ClusterError, ErrorKind, LeaseKeeper};
use roomcast_model::{ChatError, RoomId, UserId};
use roomcast_store::{AppendDone, Replicator, RoomState, StoreError, WriteSet};

pub(crate) use crate::remote::{
    self as wire, Answer, Call, Delivery, Item, LogFrame, Reply, UserNotice,
};

use crate::fanout::{Except, RoomShards};
use crate::session::Session;
use crate::{ClientEvent, Core, Shared};

/// The engine-wide log (super admins): room id 0, which no room has.
const ENGINE_LOG: u64 = 0;

/// How long a node trusts what it last heard of another node's ownership of a room.
const OWNER_CACHE: Duration = Duration::from_secs(2);

/// Message-id slots: at most this many live nodes.
const ID_SLOTS: u64 = 1024;

/// Slot `k`'s lease key is `SLOT_KEYS - k` (far above any room id).
const SLOT_KEYS: u64 = u64::MAX - 1;

/// How many times a call is routed again when the room moved meanwhile.
const ROUTE_TRIES: usize = 4;
/// How often a call refused as not in the room tells the owner who of this node is in it
/// before the refusal stands.
const REJOIN_TRIES: usize = 2;

tokio::task_local! {
    /// Set while a node serves a call forwarded to it: such a call is never forwarded again.
    static FORWARDED: ();
}

/// True while serving a call another node forwarded.
pub(crate) fn forwarded() -> bool {
    FORWARDED.try_with(|_| ()).is_ok()
}

/// Appends to a room's log; the engine-wide log (super admins), which every node writes, takes
/// an entry after whatever other nodes appended (its entries are idempotent puts and removes of
/// their own keys, read back in full by every node).
async fn append_engine_wide(
    cluster: &Cluster,
    room: u64,
    frame: Vec<u8>,
    expected: Option<u64>,
) -> Result<u64, ClusterError> {
    let frame = Bytes::from(frame);
    match cluster.append(room, frame.clone(), expected).await {
        Err(e) if room == ENGINE_LOG && e.kind() == ErrorKind::Fenced => {
            cluster
                .append(room, frame, e.last_seq().filter(|&s| s > 0))
                .await
        }
        other => other,
    }
}

/// What taking a room over found in its log.
enum TakeOver {
    /// The room, replayed: this node runs it now.
    Taken,
    /// No room (destroyed): with the room's record as this node's store last held it.
    Gone(Option<Box<roomcast_model::RoomRecord>>),
}

/// Where a room's calls go.
pub(crate) enum Route {
    /// This node owns the room: its actor runs here.
    Local,
    /// Another node does.
    Remote(Arc<str>),
}

fn cluster_error(e: ClusterError) -> ChatError {
    match e.kind() {
        ErrorKind::Unavailable | ErrorKind::NoResponders => {
            ChatError::RoomUnavailable(format!("the cluster did not answer: {e}"))
        }
        _ => ChatError::General(format!("cluster: {e}")),
    }
}

/// A room's appends, in order, one in flight at a time (those queued meanwhile go together as
/// one entry: group commit).
#[derive(Default)]
struct RoomLog {
    /// The stream sequence of the room's last entry (`None`: its log is empty).
    expected: Option<u64>,
    running: bool,
    pending: Vec<Queued>,
    /// Set when an append failed: every later one fails until the room reloads.
    failed: Option<String>,
    /// How many appends were queued, and how many are done (acknowledged or failed).
    queued: u64,
    done: u64,
    /// Deliveries waiting for the appends queued before them (`queued` at the time): a
    /// delivery leaves for the other nodes only once the log holds what it tells, so that no
    /// node ever shows a message that a new owner would not find in the log.
    deliveries: std::collections::VecDeque<(u64, Vec<u8>)>,
    /// Callbacks waiting for the appends queued before them (`queued` at the time): told
    /// `true` once those are in the log, `false` if one of them failed.
    waiters: std::collections::VecDeque<(u64, LogWaiter)>,
    /// The room is gone from this node: its entry goes once its queue is empty.
    forgotten: bool,
    /// Compaction: bytes appended since the room's last snapshot, that snapshot's size, and
    /// whether one is on its way.
    since_snapshot: u64,
    snapshot_bytes: u64,
    snapshotting: bool,
}

/// Told whether the appends it waited for are in the log ([`ClusterLog::when_logged`]).
pub(crate) type LogWaiter = Box<dyn FnOnce(bool) + Send>;

/// What a room's log has yet to append, in order.
enum Queued {
    /// A write set (encoded), told when it is in the log; an id for barriers.
    Entry(Vec<u8>, AppendDone, u64),
    /// A snapshot of the room, once the store has read it.
    Snapshot(tokio::sync::oneshot::Receiver<Result<RoomState, StoreError>>),
}

/// The store's [`Replicator`] in cluster mode: every write set goes to its room's log.
#[derive(Default)]
pub(crate) struct ClusterLog {
    cluster: OnceLock<Cluster>,
    runtime: OnceLock<tokio::runtime::Handle>,
    rooms: Mutex<HashMap<u64, RoomLog>>,
    /// Ids of appends not yet done.
    inflight: Mutex<BTreeSet<u64>>,
    next_id: AtomicU64,
    failures: AtomicU64,
    done: tokio::sync::Notify,
    /// Told of a room whose append failed (the node gives the room up).
    on_failure: OnceLock<Box<dyn Fn(u64) + Send + Sync>>,
    /// Where deliveries go once the log holds what they tell (the node's publisher, in order).
    outbox: OnceLock<tokio::sync::mpsc::UnboundedSender<(RoomId, Vec<u8>)>>,
}

impl std::fmt::Debug for ClusterLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterLog")
    }
}

impl ClusterLog {
    fn bind(&self, cluster: Cluster, runtime: tokio::runtime::Handle) {
        let _ = self.cluster.set(cluster);
        let _ = self.runtime.set(runtime);
    }

    /// The room's log ends at `last` (replayed): appends continue from there. `since_snapshot`
    /// bytes of it follow its last snapshot, of `snapshot_bytes`.
    fn reset(&self, room: u64, last: Option<u64>, since_snapshot: u64, snapshot_bytes: u64) {
        let mut rooms = self.rooms.lock();
        let log = rooms.entry(room).or_default();
        log.expected = last;
        log.failed = None;
        log.forgotten = false;
        log.since_snapshot = since_snapshot;
        log.snapshot_bytes = snapshot_bytes;
    }

    /// An append of `room` failed (`why`): the room's log takes nothing more until the room
    /// reloads, and the node gives the room up.
    fn failed(&self, room: u64, why: &str) {
        tracing::error!(room, error = %why, "a room's log refused a write");
        let told: Vec<LogWaiter> = {
            let mut rooms = self.rooms.lock();
            let log = rooms.entry(room).or_default();
            log.failed = Some(why.to_string());
            log.waiters.drain(..).map(|(_, w)| w).collect()
        };
        for waiter in told {
            waiter(false);
        }
        if room != ENGINE_LOG {
            if let Some(on_failure) = self.on_failure.get() {
                on_failure(room);
            }
        }
    }

    /// Appends the snapshot `state` will bring, in parts that each fit one entry, after
    /// everything appended so far; then removes the log's entries before it.
    async fn snapshot(
        &self,
        room: u64,
        state: tokio::sync::oneshot::Receiver<Result<RoomState, StoreError>>,
        max: usize,
    ) {
        let done = |me: &Self, bytes: Option<u64>| {
            let mut rooms = me.rooms.lock();
            let log = rooms.entry(room).or_default();
            log.snapshotting = false;
            if let Some(bytes) = bytes {
                log.since_snapshot = 0;
                log.snapshot_bytes = bytes;
            }
        };
        let state = match state.await {
            Ok(Ok(state)) => state,
            Ok(Err(e)) => {
                tracing::warn!(room, error = %e, "a room's state could not be read for a snapshot");
                return done(self, None);
            }
            Err(_) => return done(self, None),
        };
        // (The lock is let go before `done` takes it again: it is not reentrant.)
        let expected = self
            .rooms
            .lock()
            .get(&room)
            .filter(|log| log.failed.is_none())
            .map(|log| log.expected);
        let (Some(mut expected), Some(cluster)) = (expected, self.cluster.get()) else {
            return done(self, None);
        };
        // Room for the frame around each part.
        let parts = WriteSet::snapshot(RoomId::from_u64(room), state, max.saturating_sub(256));
        let id = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let count = parts.len() as u32;
        let (mut first, mut bytes) = (None, 0u64);
        for (part, set) in parts.iter().enumerate() {
            let frame = set.encode().map_err(|e| e.to_string()).and_then(|set| {
                wire::encode(&LogFrame::Snapshot {
                    id,
                    part: part as u32,
                    parts: count,
                    set: set.as_slice(),
                })
                .map_err(|e| e.to_string())
            });
            let frame = match frame {
                Ok(frame) => frame,
                Err(e) => {
                    tracing::warn!(room, error = %e, "a snapshot could not be encoded");
                    return done(self, None);
                }
            };
            bytes += frame.len() as u64;
            match append_engine_wide(cluster, room, frame, expected).await {
                Ok(seq) => {
                    first.get_or_insert(seq);
                    let mut rooms = self.rooms.lock();
                    let log = rooms.entry(room).or_default();
                    if log.expected == expected {
                        log.expected = Some(seq);
                    }
                    expected = Some(seq);
                }
                Err(e) => {
                    self.failed(room, &e.to_string());
                    self.failures.fetch_add(1, Ordering::SeqCst);
                    return done(self, None);
                }
            }
        }
        done(self, Some(bytes));
        if let Some(first) = first {
            match cluster.purge_before(room, first).await {
                Ok(removed) => {
                    tracing::debug!(
                        room,
                        removed,
                        snapshot_bytes = bytes,
                        "compacted a room's log"
                    )
                }
                Err(e) => tracing::warn!(room, error = %e, "a room's log was not compacted"),
            }
        }
    }

    fn forget(&self, room: u64) {
        let mut rooms = self.rooms.lock();
        if let Some(log) = rooms.get_mut(&room) {
            if !log.running
                && log.pending.is_empty()
                && log.deliveries.is_empty()
                && log.waiters.is_empty()
            {
                rooms.remove(&room);
            } else {
                // Its last appends and deliveries go first.
                log.forgotten = true;
            }
        }
    }

    /// Publishes `frame` (a delivery of `room`) once every append of the room queued before
    /// this call is in the log, after the deliveries queued before it. Dropped if one of those
    /// appends failed: the room is given up, and what the delivery tells is not in the log.
    fn publish(&self, room: RoomId, frame: Vec<u8>) {
        let Some(outbox) = self.outbox.get() else {
            return;
        };
        let mut rooms = self.rooms.lock();
        match rooms.get_mut(&room.as_u64()) {
            Some(log) if log.failed.is_some() => {
                tracing::debug!(room = %room, "a delivery after a failed append is dropped");
            }
            Some(log) if log.done < log.queued || !log.deliveries.is_empty() => {
                log.deliveries.push_back((log.queued, frame));
            }
            _ => {
                let _ = outbox.send((room, frame));
            }
        }
    }

    /// Where `room`'s appends stand: how many were queued, and how many are done (`None` if one
    /// failed: the room is given up).
    pub(crate) fn progress(&self, room: u64) -> (u64, Option<u64>) {
        match self.rooms.lock().get(&room) {
            Some(log) => (log.queued, log.failed.is_none().then_some(log.done)),
            None => (0, Some(0)),
        }
    }

    /// Calls `then(true)` once every append of `room` queued so far (up to `watermark`, a
    /// `queued` count from [`ClusterLog::progress`]) is in the log, at once if they are;
    /// `then(false)` if one of them failed.
    pub(crate) fn when_logged(&self, room: u64, watermark: u64, then: LogWaiter) {
        let now = {
            let mut rooms = self.rooms.lock();
            match rooms.get_mut(&room) {
                Some(log) if log.failed.is_some() => Some(false),
                Some(log) if log.done < watermark => {
                    log.waiters.push_back((watermark, then));
                    return;
                }
                _ => Some(true),
            }
        };
        if let Some(ok) = now {
            then(ok);
        }
    }

    /// After appends of `room` are done: the deliveries they were waiting for leave (or are
    /// dropped, if an append failed), and the waiters they held are returned, to be told
    /// outside the lock.
    fn release(&self, room: u64, log: &mut RoomLog) -> Vec<(LogWaiter, bool)> {
        let mut told = Vec::new();
        if log.failed.is_some() {
            told.extend(log.waiters.drain(..).map(|(_, w)| (w, false)));
        } else {
            while log.waiters.front().is_some_and(|(w, _)| *w <= log.done) {
                if let Some((_, w)) = log.waiters.pop_front() {
                    told.push((w, true));
                }
            }
        }
        self.release_deliveries(room, log);
        told
    }

    fn release_deliveries(&self, room: u64, log: &mut RoomLog) {
        if log.failed.is_some() {
            if !log.deliveries.is_empty() {
                tracing::warn!(
                    room,
                    dropped = log.deliveries.len(),
                    "deliveries whose writes did not reach the log are dropped"
                );
                log.deliveries.clear();
            }
            return;
        }
        let Some(outbox) = self.outbox.get() else {
            return;
        };
        while log.deliveries.front().is_some_and(|(w, _)| *w <= log.done) {
            if let Some((_, frame)) = log.deliveries.pop_front() {
                let _ = outbox.send((RoomId::from_u64(room), frame));
            }
        }
    }

    async fn drain(self: Arc<Self>, room: u64) {
        let Some(cluster) = self.cluster.get().cloned() else {
            return;
        };
        let max = cluster.max_payload().saturating_sub(64);
        loop {
            let next = {
                let mut rooms = self.rooms.lock();
                let log = rooms.entry(room).or_default();
                if log.pending.is_empty() {
                    log.running = false;
                    if log.forgotten && log.deliveries.is_empty() {
                        rooms.remove(&room);
                    }
                    return;
                }
                if matches!(log.pending.first(), Some(Queued::Snapshot(_))) {
                    Err(log.pending.remove(0))
                } else {
                    Ok(())
                }
            };
            if let Err(Queued::Snapshot(state)) = next {
                self.snapshot(room, state, max).await;
                continue;
            }
            let (batch, expected, failed) = {
                let mut rooms = self.rooms.lock();
                let log = rooms.entry(room).or_default();
                // As many as fit in one entry (at least one), up to a snapshot.
                let mut size = 0;
                let mut take = 0;
                for queued in &log.pending {
                    let Queued::Entry(entry, _, _) = queued else {
                        break;
                    };
                    if take > 0 && size + entry.len() + 16 > max {
                        break;
                    }
                    size += entry.len() + 16;
                    take += 1;
                }
                let batch: Vec<_> = log
                    .pending
                    .drain(..take)
                    .filter_map(|queued| match queued {
                        Queued::Entry(entry, done, id) => Some((entry, done, id)),
                        Queued::Snapshot(_) => None,
                    })
                    .collect();
                (batch, log.expected, log.failed.clone())
            };
            let result = match failed {
                Some(why) => Err(StoreError::Replication(why)),
                None => {
                    let entries: Vec<&[u8]> = batch.iter().map(|(e, _, _)| e.as_slice()).collect();
                    match wire::encode(&LogFrame::Sets(entries)) {
                        Err(e) => Err(StoreError::Replication(e.to_string())),
                        Ok(frame) => {
                            let len = frame.len() as u64;
                            match append_engine_wide(&cluster, room, frame, expected).await {
                                Ok(seq) => {
                                    let mut rooms = self.rooms.lock();
                                    let log = rooms.entry(room).or_default();
                                    if log.expected == expected {
                                        log.expected = Some(seq);
                                    }
                                    log.since_snapshot += len;
                                    Ok(())
                                }
                                Err(e) => {
                                    let why = e.to_string();
                                    self.failed(room, &why);
                                    // Refused (fenced): not taken. Anything else (no answer in
                                    // time, the connection lost): it may have been.
                                    if e.kind() == ErrorKind::Unavailable && !e.was_not_sent() {
                                        Err(StoreError::ReplicationUnknown(why))
                                    } else {
                                        Err(StoreError::Replication(why))
                                    }
                                }
                            }
                        }
                    }
                }
            };
            if result.is_err() {
                self.failures.fetch_add(1, Ordering::SeqCst);
            }
            let told = {
                let mut rooms = self.rooms.lock();
                let log = rooms.entry(room).or_default();
                log.done += batch.len() as u64;
                self.release(room, log)
            };
            for (waiter, ok) in told {
                waiter(ok);
            }
            let mut ids = Vec::with_capacity(batch.len());
            for (_, done, id) in batch {
                done(result.clone());
                ids.push(id);
            }
            {
                let mut inflight = self.inflight.lock();
                for id in ids {
                    inflight.remove(&id);
                }
            }
            self.done.notify_waiters();
        }
    }
}

/// `session` as its node tells a room's owner it is in `room` (`None` if it is not).
fn rejoining(session: &Session, room: RoomId) -> Option<crate::remote::RejoiningMember> {
    session
        .room_presence(room)
        .map(|offline_since| crate::remote::RejoiningMember {
            user: session.user().clone(),
            offline_since,
            mark: session.room_mark(room),
            copy: (
                session.copy_start(room),
                !session.deletes_messages_on_exit(),
            ),
        })
}

/// The store's handle on the [`ClusterLog`].
#[derive(Debug, Clone)]
pub(crate) struct LogHandle(pub(crate) Arc<ClusterLog>);

impl Replicator for LogHandle {
    fn append(&self, room: Option<RoomId>, entry: Vec<u8>, done: AppendDone) {
        let log = &self.0;
        let (Some(_), Some(runtime)) = (log.cluster.get(), log.runtime.get()) else {
            done(Err(StoreError::Replication(
                "the engine has not joined its cluster yet".into(),
            )));
            return;
        };
        let room = room.map_or(ENGINE_LOG, RoomId::as_u64);
        let id = log.next_id.fetch_add(1, Ordering::SeqCst);
        log.inflight.lock().insert(id);
        let start = {
            let mut rooms = log.rooms.lock();
            let log = rooms.entry(room).or_default();
            log.pending.push(Queued::Entry(entry, done, id));
            log.queued += 1;
            !std::mem::replace(&mut log.running, true)
        };
        if start {
            // The drain ends by itself once its room's queue is empty.
            runtime.spawn(log.clone().drain(room));
        }
    }

    fn wants_snapshot(&self, room: RoomId) -> bool {
        let log = &self.0;
        let Some(cluster) = log.cluster.get() else {
            return false;
        };
        let threshold = cluster.config().compaction_bytes;
        log.rooms.lock().get(&room.as_u64()).is_some_and(|l| {
            !l.snapshotting
                && l.failed.is_none()
                && l.since_snapshot > threshold.max(l.snapshot_bytes.saturating_mul(2))
        })
    }

    fn append_snapshot(
        &self,
        room: RoomId,
        state: tokio::sync::oneshot::Receiver<Result<RoomState, StoreError>>,
    ) {
        let log = &self.0;
        let Some(runtime) = log.runtime.get() else {
            return;
        };
        let room = room.as_u64();
        let start = {
            let mut rooms = log.rooms.lock();
            let log = rooms.entry(room).or_default();
            log.snapshotting = true;
            log.pending.push(Queued::Snapshot(state));
            !std::mem::replace(&mut log.running, true)
        };
        if start {
            runtime.spawn(log.clone().drain(room));
        }
    }

    fn barrier(&self, done: AppendDone) {
        let log = &self.0;
        let Some(runtime) = log.runtime.get() else {
            done(Ok(()));
            return;
        };
        let target = log.next_id.load(Ordering::SeqCst);
        let failures = log.failures.load(Ordering::SeqCst);
        let me = log.clone();
        runtime.spawn(async move {
            loop {
                let notified = me.done.notified();
                let pending = me
                    .inflight
                    .lock()
                    .first()
                    .is_some_and(|&first| first < target);
                if !pending {
                    break;
                }
                notified.await;
            }
            if me.failures.load(Ordering::SeqCst) != failures {
                done(Err(StoreError::Replication(
                    "a write made before this one did not reach the cluster's log".into(),
                )));
            } else {
                done(Ok(()));
            }
        });
    }
}

/// What a node with members of a room it does not own keeps for it: its local members, fed by
/// the owner's deliveries.
pub(crate) struct Mirror {
    room: RoomId,
    state: Mutex<MirrorState>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The node's outage generation at which this mirror may last have missed deliveries (its
    /// node lost NATS, or the server dropped events, or the room's lease was lost here), and
    /// the one up to which its owner has since heard who of this node is in (`Call::Rejoin`).
    /// Stale while `stale > synced`.
    stale: AtomicU64,
    synced: AtomicU64,
    /// One resync at a time.
    syncing: tokio::sync::Mutex<()>,
    /// Set when the node dropped it (its room came here, or it had no member left): it is
    /// never subscribed again, and applies nothing (a resync or a join still holding it must
    /// not feed its members twice, beside the room's actor or a newer mirror).
    retired: std::sync::atomic::AtomicBool,
}

struct MirrorState {
    members: HashMap<UserId, Arc<Session>>,
    shards: RoomShards,
    /// Joins on their way to the owner (the mirror stays while one is).
    joining: usize,
    /// Sessions a `Joined` delivery just made members, with the parts of their `Replay` (which
    /// comes next) received so far; cleared by the next broadcast.
    fresh: HashMap<UserId, Vec<ClientEvent>>,
    /// The newest message broadcast so far: one that comes again, or late (published by an
    /// owner as it lost NATS, sent on its reconnection), is not delivered again.
    last_message: u64,
    /// Local sessions whose join the owner answered, waiting for its `Joined` delivery: a
    /// joiner is fed from that point of the room's deliveries on, after the room's messages it
    /// gets in its join replay (the answer may overtake deliveries published before it).
    awaiting: HashMap<UserId, Arc<Session>>,
    /// Marks of `Joined` deliveries that came before their session entered the room (its
    /// join's answer still on its way): the session takes them when it enters.
    early_marks: HashMap<UserId, (u64, u64)>,
}

impl Mirror {
    fn add(&self, shared: &Shared, session: Arc<Session>) {
        let mut state = self.state.lock();
        state.awaiting.remove(session.user());
        if state.members.contains_key(session.user()) {
            return;
        }
        let MirrorState {
            members, shards, ..
        } = &mut *state;
        shared.fanout.add(self.room, session.clone(), shards);
        members.insert(session.user().clone(), session);
    }

    fn remove(&self, shared: &Shared, user: &UserId) -> Option<Arc<Session>> {
        let mut state = self.state.lock();
        state.early_marks.remove(user);
        let awaiting = state.awaiting.remove(user);
        let MirrorState {
            members, shards, ..
        } = &mut *state;
        let Some(session) = members.remove(user) else {
            return awaiting;
        };
        shared.fanout.remove(self.room, &session, shards);
        Some(session)
    }

    fn apply(&self, node: &Node, shared: &Shared, delivery: Delivery) {
        if self.retired.load(Ordering::SeqCst) {
            return;
        }
        match delivery {
            Delivery::Joined {
                user,
                node: at,
                mark,
            } => {
                if *at == *node.me {
                    let (awaiting, was) = {
                        let mut state = self.state.lock();
                        (
                            state.awaiting.remove(&user),
                            state.members.contains_key(&user),
                        )
                    };
                    if let Some(session) = awaiting.or_else(|| shared.session_of(&user)) {
                        if !session.confirm_room_mark(self.room, mark) {
                            self.state.lock().early_marks.insert(user.clone(), mark);
                        }
                        self.add(shared, session);
                        if !was {
                            self.state.lock().fresh.insert(user, Vec::new());
                        }
                    }
                }
            }
            Delivery::Replay {
                user,
                node: at,
                items,
                more,
            } => {
                if *at != *node.me {
                    return;
                }
                let whole = {
                    let mut state = self.state.lock();
                    let Some(parts) = state.fresh.get_mut(&user) else {
                        return;
                    };
                    parts.extend(items.into_iter().map(Item::into_event));
                    if more {
                        return;
                    }
                    std::mem::take(parts)
                };
                if let Some(session) = shared.session_of(&user) {
                    shared.fanout.send_to(session, whole);
                }
            }
            Delivery::Left { users, node: at } => {
                if at.as_deref().is_some_and(|at| *at != *node.me) {
                    return;
                }
                for user in users {
                    if let Some(session) = self.remove(shared, &user) {
                        session.exited(self.room);
                    }
                }
            }
            Delivery::Broadcast { item, except } => {
                let mut state = self.state.lock();
                state.fresh.clear();
                if let Item::Message(m) = &item {
                    if m.seq() <= state.last_message {
                        tracing::debug!(room = %self.room, seq = m.seq(), "a message that came before, or late, is dropped");
                        return;
                    }
                    state.last_message = m.seq();
                }
                // Most skip one or two (a message's sender): kept inline, no allocation.
                let mut ids = except
                    .iter()
                    .filter_map(|u| state.members.get(u).map(|s| s.mailbox().id()));
                let mut skip = Except::of(ids.by_ref().take(2));
                for id in ids {
                    skip = skip.also(id);
                }
                shared
                    .fanout
                    .broadcast(self.room, item.into_event(), skip, &state.shards);
            }
            Delivery::To {
                users,
                node: at,
                items,
            } => {
                if at.as_deref().is_some_and(|at| *at != *node.me) {
                    return;
                }
                let items: Vec<ClientEvent> = items.into_iter().map(Item::into_event).collect();
                for user in users {
                    if let Some(session) = shared.session_of(&user) {
                        shared.fanout.send_to(session, items.clone());
                    }
                }
            }
            Delivery::Owner { node: owner } => {
                node.learned_owner(self.room, owner.as_str());
                let members = self.members_with_presence();
                if !members.is_empty() && *owner != *node.me {
                    node.send_in_order(
                        owner.into(),
                        Call::Rejoin {
                            room: self.room,
                            node: node.me.to_string(),
                            members,
                        },
                    );
                }
            }
            Delivery::Destroyed => {
                for user in self.all_users() {
                    if let Some(session) = self.remove(shared, &user) {
                        session.exited(self.room);
                    }
                }
                node.forget_room(self.room);
            }
        }
    }

    /// Stops feeding it for good (its subscription's task ends).
    fn stop(&self) {
        let mut task = self.task.lock();
        self.retired.store(true, Ordering::SeqCst);
        if let Some(task) = task.take() {
            task.abort();
        }
    }

    /// Its members, and those whose `Joined` delivery is still to come (the owner answered
    /// their join).
    fn all_users(&self) -> Vec<UserId> {
        let state = self.state.lock();
        state
            .members
            .keys()
            .chain(state.awaiting.keys())
            .cloned()
            .collect()
    }

    /// Its members (those whose `Joined` delivery is still to come too: the owner answered
    /// their join), each with its presence in the room (`None`: online).
    fn members_with_presence(&self) -> Vec<crate::remote::RejoiningMember> {
        let state = self.state.lock();
        state
            .members
            .values()
            .chain(state.awaiting.values())
            .filter_map(|s| rejoining(s, self.room))
            .collect()
    }

    /// Whether it may have missed deliveries its owner has not made up for yet.
    fn is_stale(&self) -> bool {
        self.stale.load(Ordering::SeqCst) > self.synced.load(Ordering::SeqCst)
    }

    fn is_idle(&self) -> bool {
        let state = self.state.lock();
        state.members.is_empty() && state.awaiting.is_empty() && state.joining == 0
    }

    /// `session`'s join was answered: it is fed from the owner's `Joined` delivery on (or at
    /// once, if that came first).
    fn await_joined(&self, session: Arc<Session>) {
        let mut state = self.state.lock();
        if !state.members.contains_key(session.user()) {
            state.awaiting.insert(session.user().clone(), session);
        }
    }
}

/// Another node with members in rooms this node owns: which rooms, and since when it has not
/// answered a ping (if it has not).
type MemberNode = (BTreeSet<RoomId>, Option<Instant>);

/// A user with a session on this node, and the task that follows its subject.
type FollowedUser = (Weak<Session>, tokio::task::JoinHandle<()>);

/// This node's part in a cluster.
pub(crate) struct Node {
    cluster: Cluster,
    me: Arc<str>,
    log: Arc<ClusterLog>,
    runtime: tokio::runtime::Handle,
    /// The rooms this node owns: their lease keepers.
    owned: Mutex<HashMap<RoomId, LeaseKeeper>>,
    /// Who owns rooms elsewhere, and when this node heard it.
    owners: Mutex<HashMap<RoomId, (Arc<str>, Instant)>>,
    /// One takeover at a time per room.
    taking: Mutex<HashMap<RoomId, Arc<tokio::sync::Mutex<()>>>>,
    mirrors: Mutex<HashMap<RoomId, Arc<Mirror>>>,
    /// Calls that must reach their node in order (presence, rejoins).
    ordered: tokio::sync::mpsc::UnboundedSender<(Arc<str>, Call)>,
    /// The directory summary last put for each room this node owns.
    summaries: Mutex<HashMap<RoomId, Vec<u8>>>,
    core: OnceLock<Weak<crate::Inner>>,
    /// The node's own tasks (serving, publishing, the directory, housekeeping).
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// The lease of this node's message-id slot.
    slot: Mutex<Option<LeaseKeeper>>,
    /// Rooms this node took over, and when: their deliveries are published for a while even
    /// before the other nodes told who of theirs is in them.
    taken: Mutex<HashMap<RoomId, Instant>>,
    /// The revision of each lease this node took (a room's term while this node owns it: see
    /// `RoomActor::mark`).
    terms: Mutex<HashMap<RoomId, u64>>,
    /// Sessions a room's previous owner made members (its `Joined` came) whose join it did not
    /// answer before this node took the room, with the newest message the mirror had fed them:
    /// their join goes on here, and its replay holds only later messages.
    unanswered: Mutex<HashMap<(RoomId, UserId), u64>>,
    /// The other nodes with members in rooms this node owns (which rooms), and how many times
    /// in a row each did not answer a ping.
    member_nodes: Mutex<HashMap<String, MemberNode>>,
    /// Bumped at each outage (see [`Mirror::stale`]).
    outages: AtomicU64,
    /// Set as the node stops (under `owned`'s lock): no lease is held from then on.
    stopping: std::sync::atomic::AtomicBool,
    /// The users with a session on this node, each with the task that follows its subject
    /// (its sessions on other nodes). Dropped with the session.
    users: Mutex<HashMap<UserId, FollowedUser>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Connects to the cluster (on the engine's runtime) and starts serving: calls from other
    /// nodes, the room directory, the outbox.
    pub(crate) async fn join(
        core: &Core,
        config: ClusterConfig,
        log: Arc<ClusterLog>,
    ) -> Result<Arc<Node>, ChatError> {
        let runtime = core.inner.runtime_handle.clone();
        let cluster = runtime
            .spawn(Cluster::connect(config))
            .await
            .map_err(|e| ChatError::General(format!("joining the cluster: {e}")))?
            .map_err(|e| ChatError::General(format!("cannot join the cluster: {e}")))?;
        log.bind(cluster.clone(), runtime.clone());
        let (outbox, outgoing) = tokio::sync::mpsc::unbounded_channel();
        let _ = log.outbox.set(outbox);
        let (ordered, ordered_rx) = tokio::sync::mpsc::unbounded_channel();
        let node = Arc::new(Node {
            me: cluster.node().into(),
            cluster,
            log,
            runtime: runtime.clone(),
            owned: Mutex::new(HashMap::new()),
            owners: Mutex::new(HashMap::new()),
            taking: Mutex::new(HashMap::new()),
            mirrors: Mutex::new(HashMap::new()),
            ordered,
            summaries: Mutex::new(HashMap::new()),
            core: OnceLock::new(),
            tasks: Mutex::new(Vec::new()),
            slot: Mutex::new(None),
            taken: Mutex::new(HashMap::new()),
            terms: Mutex::new(HashMap::new()),
            unanswered: Mutex::new(HashMap::new()),
            member_nodes: Mutex::new(HashMap::new()),
            outages: AtomicU64::new(0),
            stopping: std::sync::atomic::AtomicBool::new(false),
            users: Mutex::new(HashMap::new()),
        });
        let _ = node.core.set(Arc::downgrade(&core.inner));
        // A room whose write did not reach its log is given up here: its actor stops, its
        // lease goes, and whichever node takes it next replays the log (the truth).
        let weak = Arc::downgrade(&node);
        let _ = node.log.on_failure.set(Box::new(move |room| {
            if let Some(node) = weak.upgrade() {
                node.give_up(RoomId::from_u64(room));
            }
        }));
        // A slot for message ids: a lease of its own, kept as long as the node runs.
        let slot = node.claim_slot().await?;
        core.inner.shared.id_slot.store(slot, Ordering::SeqCst);
        // A node id is one process's: refused if another answers to it already.
        if node.forward(&node.me.clone(), &Call::Ping).await.is_ok() {
            return Err(ChatError::InvalidParam(format!(
                "node id {} is in use by another running engine of cluster {}",
                node.me,
                node.cluster.config().cluster
            )));
        }
        // The engine-wide log first: super admins.
        node.catch_up_engine(core).await?;
        let requests = runtime
            .spawn({
                let cluster = node.cluster.clone();
                async move { cluster.serve().await }
            })
            .await
            .map_err(|e| ChatError::General(e.to_string()))?
            .map_err(cluster_error)?;
        node.tasks.lock().extend([
            runtime.spawn(serve(Arc::downgrade(&node), requests)),
            runtime.spawn(publish(node.cluster.clone(), outgoing)),
            runtime.spawn(send_ordered(Arc::downgrade(&node), ordered_rx)),
        ]);
        let directory = runtime
            .spawn({
                let cluster = node.cluster.clone();
                async move { cluster.watch_rooms().await }
            })
            .await
            .map_err(|e| ChatError::General(e.to_string()))?
            .map_err(cluster_error)?;
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let watch = runtime.spawn(watch_directory(Arc::downgrade(&node), directory, ready_tx));
        node.tasks.lock().push(watch);
        // The rooms there are, before the engine serves its first call.
        let _ = tokio::time::timeout(Duration::from_secs(10), ready_rx).await;
        let kept = runtime.spawn(housekeeping(Arc::downgrade(&node)));
        node.tasks.lock().push(kept);
        let watch = runtime.spawn(watch_connection(
            Arc::downgrade(&node),
            node.cluster.connection(),
        ));
        node.tasks.lock().push(watch);
        tracing::info!(node = %node.me, "joined the cluster");
        Ok(node)
    }

    /// The engine stops: the node stops serving and hands its rooms over (their leases are
    /// released, so that other nodes take them at once, not a lease time later).
    pub(crate) async fn stop(&self) {
        self.abort_tasks();
        self.drop_mirrors();
        // From now on no lease is taken here (a forwarded call still running may be taking a
        // room: it lets the lease go instead of renewing it for a node that serves nothing).
        let keepers: Vec<LeaseKeeper> = {
            let mut owned = self.owned.lock();
            self.stopping.store(true, Ordering::SeqCst);
            let mut keepers: Vec<LeaseKeeper> = std::mem::take(&mut *owned).into_values().collect();
            keepers.extend(self.slot.lock().take());
            keepers
        };
        if keepers.is_empty() {
            return;
        }
        let released = self.runtime.spawn(async move {
            for keeper in keepers {
                let _ = keeper.release().await;
            }
        });
        let _ = tokio::time::timeout(self.cluster.config().request_timeout * 2, released).await;
    }

    /// The engine is dropped without a shutdown: the node stops at once (its leases lapse).
    pub(crate) fn abort_tasks(&self) {
        for task in self.tasks.lock().drain(..) {
            task.abort();
        }
        for (_, (_, task)) in self.users.lock().drain() {
            task.abort();
        }
    }

    /// A client of `session` opened on this node: the node follows the user's subject (its
    /// sessions on other nodes, its other devices), and asks the nodes that have one which
    /// rooms the user is in, so that this session gets their deliveries too. Not awaited
    /// beyond the subscription: the rooms are attached as the answers come.
    pub(crate) async fn user_logged_in(&self, core: &Core, session: &Arc<Session>) {
        let user = session.user().clone();
        {
            let users = self.users.lock();
            if users
                .get(&user)
                .is_some_and(|(s, _)| s.upgrade().is_some_and(|s| Arc::ptr_eq(&s, session)))
            {
                return;
            }
        }
        let cluster = self.cluster.clone();
        let key = user.to_string();
        let messages = match self
            .runtime
            .spawn(async move { cluster.subscribe_user(&key).await })
            .await
        {
            Ok(Ok(messages)) => messages,
            Ok(Err(e)) => {
                tracing::warn!(user = %user, error = %e, "cannot follow a user's other nodes");
                return;
            }
            Err(_) => return,
        };
        let task = self.runtime.spawn(follow_user(
            Arc::downgrade(&core.inner),
            Arc::downgrade(session),
            messages,
        ));
        if let Some((_, old)) = self
            .users
            .lock()
            .insert(user.clone(), (Arc::downgrade(session), task))
        {
            old.abort();
        }
        self.tell_user(&user, &UserNotice::Hello);
    }

    /// `user` joined `room` through this node: its sessions on other nodes hear of it.
    pub(crate) fn user_joined(&self, user: &UserId, room: RoomId) {
        self.tell_user(user, &UserNotice::In(vec![room]));
    }

    fn tell_user(&self, user: &UserId, notice: &UserNotice) {
        let Ok(frame) = wire::encode(notice) else {
            return;
        };
        let cluster = self.cluster.clone();
        let key = user.to_string();
        self.runtime.spawn(async move {
            if let Err(e) = cluster.publish_user(&key, frame).await {
                tracing::debug!(user = %key, error = %e, "a user's other nodes were not told");
            }
        });
    }

    /// Stops following the users whose session is gone.
    fn forget_gone_users(&self) {
        self.users.lock().retain(|_, (session, task)| {
            let alive = session.strong_count() > 0;
            if !alive {
                task.abort();
            }
            alive
        });
    }

    /// The engine was dropped without a shutdown: nothing more is renewed or served (dropped
    /// keepers stop renewing; the leases lapse within their time).
    pub(crate) fn abort(&self) {
        self.abort_tasks();
        {
            let mut owned = self.owned.lock();
            self.stopping.store(true, Ordering::SeqCst);
            drop(std::mem::take(&mut *owned));
            drop(self.slot.lock().take());
        }
        self.drop_mirrors();
    }

    /// Every mirror stops for good (the node stops).
    fn drop_mirrors(&self) {
        for mirror in std::mem::take(&mut *self.mirrors.lock()).into_values() {
            mirror.stop();
        }
    }

    fn core(&self) -> Option<Core> {
        self.core
            .get()
            .and_then(Weak::upgrade)
            .map(|inner| Core { inner })
    }

    /// This node's id.
    pub(crate) fn me(&self) -> &str {
        &self.me
    }

    fn learned_owner(&self, room: RoomId, owner: &str) {
        if *owner == *self.me {
            return;
        }
        self.owners
            .lock()
            .insert(room, (owner.into(), Instant::now()));
    }

    fn forget_room(&self, room: RoomId) {
        self.owners.lock().remove(&room);
        if let Some(mirror) = self.mirrors.lock().remove(&room) {
            mirror.stop();
        }
        self.log.forget(room.as_u64());
    }

    /// Where `room`'s log stands: appends queued, and appends done (`None` once one failed).
    pub(crate) fn log_progress(&self, room: RoomId) -> (u64, Option<u64>) {
        self.log.progress(room.as_u64())
    }

    /// Calls `then(true)` once `room`'s log holds its first `watermark` appends (or
    /// `then(false)` if one failed); see [`ClusterLog::when_logged`].
    pub(crate) fn when_logged(&self, room: RoomId, watermark: u64, then: LogWaiter) {
        self.log.when_logged(room.as_u64(), watermark, then);
    }

    /// Publishes `delivery` on `room`'s subject, after everything published before it, once the
    /// room's log holds every write this node made to the room before this call (see
    /// [`ClusterLog::publish`]).
    pub(crate) fn publish(&self, room: RoomId, delivery: &Delivery) {
        match wire::encode(delivery) {
            Ok(frame) if frame.len() <= self.cluster.max_payload() => {
                self.log.publish(room, frame);
            }
            // Too big as one NATS message, or as one record (4 MiB).
            _ => match delivery {
                // Too big as one (a replay of big messages): one item at a time.
                Delivery::Replay {
                    user,
                    node,
                    items,
                    more,
                } if items.len() > 1 => {
                    let last = items.len() - 1;
                    for (i, item) in items.iter().enumerate() {
                        self.publish(
                            room,
                            &Delivery::Replay {
                                user: user.clone(),
                                node: node.clone(),
                                items: vec![item.clone()],
                                more: *more || i < last,
                            },
                        );
                    }
                }
                Delivery::To { users, node, items } if items.len() > 1 => {
                    for item in items {
                        self.publish(
                            room,
                            &Delivery::To {
                                users: users.clone(),
                                node: node.clone(),
                                items: vec![item.clone()],
                            },
                        );
                    }
                }
                _ => {
                    tracing::error!(room = %room, "a delivery is too big for NATS, or could not be encoded; members on other nodes miss it")
                }
            },
        }
    }

    /// Sends `call` to `node` after every call sent this way before it (fire and forget).
    fn send_in_order(&self, node: Arc<str>, call: Call) {
        let _ = self.ordered.send((node, call));
    }

    /// Puts the directory summaries of the rooms this node owns that changed since last put.
    async fn put_summaries(&self, core: &Core) {
        let owned: Vec<RoomId> = self.owned.lock().keys().copied().collect();
        for room in owned {
            let Some(entry) = core.inner.shared.directory.get(room) else {
                continue;
            };
            if entry.is_destroyed() {
                continue;
            }
            let Ok(summary) = wire::encode(&entry.summary()) else {
                continue;
            };
            if self.summaries.lock().get(&room) == Some(&summary) {
                continue;
            }
            match self
                .cluster
                .put_room_summary(room.as_u64(), summary.clone())
                .await
            {
                Ok(()) => {
                    self.summaries.lock().insert(room, summary);
                }
                Err(e) => tracing::debug!(room = %room, error = %e, "a room summary was not put"),
            }
        }
    }

    /// Puts a new room's summary at once (other nodes list it).
    pub(crate) async fn put_summary(&self, room: &roomcast_model::ChatRoom) {
        let Ok(summary) = wire::encode(room) else {
            return;
        };
        let cluster = self.cluster.clone();
        let id = room.room_id;
        let put = summary.clone();
        let done = self
            .runtime
            .spawn(async move { cluster.put_room_summary(id.as_u64(), put).await })
            .await;
        if matches!(done, Ok(Ok(()))) {
            self.summaries.lock().insert(id, summary);
        }
    }

    /// 510 for a message too big for a NATS message with its envelope (32 KiB of the payload
    /// limit are kept for the envelope and the log entry's other content).
    pub(crate) fn check_message_size(
        &self,
        message: &roomcast_model::OutgoingMessage,
    ) -> Result<(), ChatError> {
        let limit = self.cluster.max_payload().saturating_sub(32 * 1024);
        let size = wire::encode(message).map(|b| b.len()).unwrap_or(usize::MAX);
        if size > limit {
            return Err(ChatError::MessageSizeLimit { size, limit });
        }
        Ok(())
    }

    /// Node `node` has members in `room`, which this node owns.
    fn note_member_node(&self, node: &str, room: RoomId) {
        if node == &*self.me {
            return;
        }
        self.member_nodes
            .lock()
            .entry(node.to_string())
            .or_default()
            .0
            .insert(room);
    }

    /// Pings the nodes with members in rooms this node owns; one that failed twice in a row is
    /// gone: its members are offline from now in each of those rooms (their grace runs).
    async fn check_member_nodes(&self, core: &Core) {
        let nodes: Vec<String> = self.member_nodes.lock().keys().cloned().collect();
        for node in nodes {
            let asked = Instant::now();
            let alive = self.forward(&node, &Call::Ping).await.is_ok();
            let (gone_rooms, since) = {
                let mut members = self.member_nodes.lock();
                let Some(entry) = members.get_mut(&node) else {
                    continue;
                };
                if alive {
                    entry.1 = None;
                    continue;
                }
                let since = *entry.1.get_or_insert(asked);
                // Silent for a whole lease time: gone.
                if since.elapsed() < self.cluster.config().lease_ttl {
                    continue;
                }
                (
                    members
                        .remove(&node)
                        .map(|(rooms, _)| rooms)
                        .unwrap_or_default(),
                    since,
                )
            };
            tracing::warn!(node = %node, rooms = gone_rooms.len(), "a node with members in this node's rooms is gone");
            for room in gone_rooms {
                if let Some(addr) = core
                    .inner
                    .shared
                    .directory
                    .get(room)
                    .and_then(|e| e.live_actor())
                {
                    addr.do_send(crate::room_actor::NodeGone {
                        node: node.clone(),
                        silent_since: since,
                    });
                }
            }
        }
    }

    /// True if this node took `room` over lately (within two lease times): the members on
    /// other nodes may not have told it yet that they are in it.
    pub(crate) fn recently_taken(&self, room: RoomId) -> bool {
        let window = self.cluster.config().lease_ttl * 2;
        let mut taken = self.taken.lock();
        match taken.get(&room) {
            Some(at) if at.elapsed() < window => true,
            Some(_) => {
                taken.remove(&room);
                false
            }
            None => false,
        }
    }

    /// See [`Node::unanswered`]: taken by the join that goes on here.
    pub(crate) fn take_unanswered_join(&self, room: RoomId, user: &UserId) -> Option<u64> {
        self.unanswered.lock().remove(&(room, user.clone()))
    }

    /// The revision of the lease of `room` this node took last (0 if none).
    pub(crate) fn term(&self, room: RoomId) -> u64 {
        self.terms.lock().get(&room).copied().unwrap_or(0)
    }

    /// True if this node holds `room`'s lease.
    pub(crate) fn owns(&self, room: RoomId) -> bool {
        self.owned
            .lock()
            .get(&room)
            .is_some_and(LeaseKeeper::is_held)
    }

    /// Where `room`'s calls go. Taking a room that nobody owns (a new one, or one whose owner
    /// went) replays its log into the local store first.
    pub(crate) async fn route(&self, core: &Core, room: RoomId) -> Result<Route, ChatError> {
        if self.owns(room) {
            return Ok(Route::Local);
        }
        if let Some((owner, at)) = self.owners.lock().get(&room).cloned() {
            if at.elapsed() < OWNER_CACHE {
                return Ok(Route::Remote(owner));
            }
        }
        let lock = self
            .taking
            .lock()
            .entry(room)
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(())))
            .clone();
        let _taking = lock.lock().await;
        if self.owns(room) {
            return Ok(Route::Local);
        }
        let cluster = self.cluster.clone();
        let acquired = self
            .runtime
            .spawn(async move { cluster.acquire(room.as_u64()).await })
            .await
            .map_err(|e| ChatError::General(e.to_string()))?;
        match acquired {
            Ok(lease) => {
                self.terms.lock().insert(room, lease.revision());
                let keeper = lease.keep_alive();
                match self.take_over(core, room).await {
                    Ok(TakeOver::Taken) => {}
                    Ok(TakeOver::Gone(known)) => {
                        drop(self.runtime.spawn(async move { keeper.release().await }));
                        self.owners.lock().remove(&room);
                        self.gone_from_log(core, room, known);
                        return Err(ChatError::RoomNotExist(room.to_string()));
                    }
                    Err(e) => {
                        drop(self.runtime.spawn(async move { keeper.release().await }));
                        return Err(e);
                    }
                }
                self.watch_lease(room, &keeper);
                {
                    // A mirror made meanwhile (this node's lost lease of the room, handled
                    // late) goes: the actor feeds this node's members now, alone.
                    let mut mirrors = self.mirrors.lock();
                    if let Some(mirror) = mirrors.remove(&room) {
                        mirror.stop();
                    }
                    if !self.hold(room, keeper) {
                        return Err(ChatError::EngineStopped);
                    }
                }
                self.owners.lock().remove(&room);
                Ok(Route::Local)
            }
            Err(e) if e.kind() == ErrorKind::LeaseHeld => match e.owner() {
                Some(owner) if owner != &*self.me => {
                    let owner: Arc<str> = owner.into();
                    self.owners
                        .lock()
                        .insert(room, (owner.clone(), Instant::now()));
                    Ok(Route::Remote(owner))
                }
                _ => Err(ChatError::RoomUnavailable(format!(
                    "room {room}'s lease is held, by whom is unknown"
                ))),
            },
            Err(e) => Err(cluster_error(e)),
        }
    }

    /// `room`'s log holds no room (it was destroyed while this node was away, or its owner
    /// died before it told the other nodes): this node's members of it are told as a destroy
    /// tells them (`on_chat_room_destroyed`, then `on_removed_from_chat_room(Destroyed)`, but
    /// the room's owner), with the room's name and owner as this node last knew them (`known`:
    /// the record its store held, if any; else the room list's entry).
    fn gone_from_log(
        &self,
        core: &Core,
        room: RoomId,
        known: Option<Box<roomcast_model::RoomRecord>>,
    ) {
        let shared = &core.inner.shared;
        let mirror = self.mirrors.lock().get(&room).cloned();
        if let Some(mirror) = mirror {
            let (room_name, owner) = match known {
                Some(record) => {
                    let record = *record;
                    (record.spec.name, Some(record.owner))
                }
                None => shared
                    .directory
                    .get(room)
                    .map(|e| {
                        let summary = e.summary();
                        (summary.name, Some(summary.owner))
                    })
                    .unwrap_or_default(),
            };
            let mut told = mirror.all_users();
            told.retain(|u| owner.as_ref() != Some(u));
            let event = roomcast_model::ChatRoomEvent::ChatRoomDestroyed {
                room_id: room,
                room_name: room_name.clone(),
            };
            mirror.apply(
                self,
                shared,
                Delivery::To {
                    users: told.clone(),
                    node: None,
                    items: vec![Item::Event(event)],
                },
            );
            for participant in told {
                let event = roomcast_model::ChatRoomEvent::RemovedFromChatRoom {
                    room_id: room,
                    room_name: room_name.clone(),
                    participant: participant.clone(),
                    reason: roomcast_model::LeaveReason::Destroyed,
                    operator: owner.clone(),
                    operator_reason: None,
                };
                mirror.apply(
                    self,
                    shared,
                    Delivery::To {
                        users: vec![participant],
                        node: None,
                        items: vec![Item::Event(event)],
                    },
                );
            }
            mirror.apply(self, shared, Delivery::Destroyed);
        }
        if let Some(entry) = shared.directory.get(room) {
            shared.directory.mark_destroyed(&entry);
        }
    }

    /// This node just took `room`: its log replayed into the local store (what the store held
    /// of it wiped first), the directory entry made, the other nodes told. `Gone` if the log
    /// holds no such room.
    async fn take_over(&self, core: &Core, room: RoomId) -> Result<TakeOver, ChatError> {
        let store = core.store()?;
        // An actor of this room left here from an earlier ownership stops first: its memory
        // may be ahead of the log.
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Some(addr) = core
            .inner
            .shared
            .directory
            .get(room)
            .and_then(|e| e.live_actor())
        {
            if Instant::now() >= deadline {
                return Err(ChatError::RoomUnavailable(format!(
                    "room {room}'s earlier actor here did not stop"
                )));
            }
            addr.do_send(crate::room_actor::Evict);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let cluster = self.cluster.clone();
        let entries = self
            .runtime
            .spawn(async move { cluster.replay(room.as_u64(), 0).await })
            .await
            .map_err(|e| ChatError::General(e.to_string()))?
            .map_err(cluster_error)?;
        // The room as this node last knew it (its members are told of a room gone from the log
        // with its name and owner).
        let known = store
            .read(move |reader| reader.room(room))
            .await
            .and_then(|r| r)
            .ok()
            .flatten()
            .map(Box::new);
        let mut wipe = WriteSet::new();
        wipe.delete_room(room);
        let wipe = wipe.encode().map_err(crate::storage_error)?;
        let mut last = None;
        // (The local store is a cache of the log: its commits need no waiting; the read below
        // is queued after these writes.)
        drop(
            store
                .apply_replicated(&wipe)
                .map_err(crate::storage_error)?,
        );
        let apply = |set: &[u8]| -> Result<(), ChatError> {
            drop(store.apply_replicated(set).map_err(crate::storage_error)?);
            Ok(())
        };
        // A snapshot applies once all its parts are read (one whose writer died midway never
        // does: the entries before it are still there).
        let mut snapshot: Vec<Vec<u8>> = Vec::new();
        let mut snapshot_of: Option<(u64, u32)> = None;
        let (mut since_snapshot, mut snapshot_bytes, mut reading) = (0u64, 0u64, 0u64);
        for entry in &entries {
            let len = entry.payload.len() as u64;
            match wire::decode::<LogFrame<Vec<u8>>>(&entry.payload)? {
                LogFrame::Sets(sets) => {
                    snapshot.clear();
                    snapshot_of = None;
                    for set in &sets {
                        apply(set)?;
                    }
                    since_snapshot += len;
                }
                LogFrame::Snapshot {
                    id,
                    part,
                    parts,
                    set,
                } => {
                    if part == 0 {
                        snapshot.clear();
                        snapshot_of = Some((id, parts));
                        reading = 0;
                    }
                    if snapshot_of == Some((id, parts)) && part as usize == snapshot.len() {
                        snapshot.push(set);
                        reading += len;
                    } else {
                        snapshot.clear();
                        snapshot_of = None;
                        since_snapshot += len;
                    }
                    if snapshot_of.is_some() && snapshot.len() == parts as usize {
                        for set in snapshot.drain(..) {
                            apply(&set)?;
                        }
                        snapshot_of = None;
                        (since_snapshot, snapshot_bytes) = (0, reading);
                    }
                }
            }
            last = Some(entry.seq);
        }
        self.log
            .reset(room.as_u64(), last, since_snapshot, snapshot_bytes);
        let record = store
            .read(move |reader| reader.room(room))
            .await
            .and_then(|r| r)
            .map_err(crate::storage_error)?;
        let Some(record) = record else {
            return Ok(TakeOver::Gone(known));
        };
        let shared = &core.inner.shared;
        if shared.directory.get(room).is_none_or(|e| e.is_destroyed()) {
            let snapshot =
                roomcast_model::Room::from_record(record, &shared.limits, 0, 0).snapshot(None);
            shared
                .directory
                .insert(crate::directory::RoomEntry::new(snapshot));
        }
        // This node's own members of the room are the actor's now, not a mirror's.
        let mirror = self.mirrors.lock().remove(&room);
        if let Some(mirror) = mirror {
            mirror.stop();
            let state = mirror.state.lock();
            let mut unanswered = self.unanswered.lock();
            unanswered.retain(|(r, _), _| *r != room);
            for session in state.members.values() {
                if !session.is_in(room) {
                    unanswered.insert((room, session.user().clone()), state.last_message);
                }
                let mut shards = shared.fanout.room_shards();
                shared.fanout.remove(room, session, &mut shards);
            }
        }
        if !entries.is_empty() {
            self.taken.lock().insert(room, Instant::now());
            tracing::info!(room = %room, entries = entries.len(), node = %self.me, "took over a room");
            self.publish(
                room,
                &Delivery::Owner {
                    node: self.me.to_string(),
                },
            );
        }
        Ok(TakeOver::Taken)
    }

    /// Holds `keeper` as this node's lease of `room`, unless the node is stopping: then the
    /// lease is released at once (nothing would serve the room here) and this is `false`.
    fn hold(&self, room: RoomId, keeper: LeaseKeeper) -> bool {
        let mut owned = self.owned.lock();
        if self.stopping.load(Ordering::SeqCst) {
            drop(owned);
            drop(self.runtime.spawn(async move { keeper.release().await }));
            return false;
        }
        owned.insert(room, keeper);
        true
    }

    /// Stops the room's actor here when its lease is lost (another node took it).
    fn watch_lease(&self, room: RoomId, keeper: &LeaseKeeper) {
        let mut status = keeper.subscribe();
        let weak = self.core.get().cloned();
        self.runtime.spawn(async move {
            let _ = status
                .wait_for(|s| matches!(s, roomcast_cluster::LeaseStatus::Lost(_)))
                .await;
            let Some(inner) = weak.and_then(|w| w.upgrade()) else {
                return;
            };
            let core = Core { inner };
            if let Some(node) = core.node() {
                node.lost(&core, room);
            }
        });
    }

    /// A write of `room` did not reach its log: the room is given up (its lease released so that
    /// any node, this one included, takes it again from the log).
    fn give_up(&self, room: RoomId) {
        let Some(core) = self.core() else { return };
        if !self.owned.lock().contains_key(&room) {
            // An actor still running here without the lease (it started as the lease went)
            // stops too.
            let actor = core
                .inner
                .shared
                .directory
                .get(room)
                .and_then(|e| e.live_actor());
            if let Some(actor) = actor {
                self.to_mirror(core, room, Some(actor));
            }
            return;
        }
        self.lost(&core, room);
        self.owners.lock().remove(&room);
    }

    /// `room`'s lease is gone: its actor stops, and this node's members of it are a mirror's.
    fn lost(&self, core: &Core, room: RoomId) {
        let Some(keeper) = self.owned.lock().remove(&room) else {
            return;
        };
        // Released if still held (a lease lost already is not ours to release).
        self.runtime.spawn(async move {
            let _ = keeper.release().await;
        });
        tracing::warn!(room = %room, node = %self.me, "lost a room's lease; its actor stops here");
        let actor = core
            .inner
            .shared
            .directory
            .get(room)
            .and_then(|e| e.live_actor());
        self.to_mirror(core.clone(), room, actor);
    }

    /// An actor of `room` started here without the room's lease (a call took the room here
    /// just before the lease was lost, and its actor started after): it stops at once, and this
    /// node's members of the room are a mirror's.
    pub(crate) fn started_without_lease(&self, room: RoomId) {
        tracing::warn!(room = %room, node = %self.me, "a room's actor started without its lease here; it stops");
        if let Some(core) = self.core() {
            self.to_mirror(core, room, None);
        }
    }

    /// After `actor` (if any) is evicted, this node's sessions in `room` are its mirror's, and
    /// the room's owner hears of them.
    fn to_mirror(
        &self,
        core: Core,
        room: RoomId,
        actor: Option<actix::Addr<crate::room_actor::RoomActor>>,
    ) {
        self.runtime.spawn(async move {
            // The actor is gone (and its fan-out entries with it) before a mirror takes its
            // members.
            if let Some(actor) = actor {
                let _ = actor.send(crate::room_actor::Evict).await;
            }
            let Some(node) = core.node() else { return };
            let shared = &core.inner.shared;
            let members: Vec<Arc<Session>> = shared
                .sessions
                .read()
                .iter()
                .filter(|crate::SessionKey(s)| s.is_in(room))
                .map(|crate::SessionKey(s)| s.clone())
                .collect();
            if members.is_empty() {
                return;
            }
            // Unless the room came back here meanwhile (checked under the mirrors' lock, which
            // taking a room holds as it becomes the owner).
            let Some(mirror) = node.mirror_unless_owned(&core, room) else {
                return;
            };
            for session in members {
                mirror.add(shared, session);
            }
            // Fed by the room's new owner from now on, once it heard who of this node is in
            // (it may not know, if it took the room while this node was cut off).
            node.mark_stale(&mirror);
            node.resync(&core, &mirror).await;
        });
    }

    /// The mirror of `room` on this node, unless this node owns the room.
    fn mirror_unless_owned(&self, core: &Core, room: RoomId) -> Option<Arc<Mirror>> {
        let mut mirrors = self.mirrors.lock();
        if self.owns(room) {
            return None;
        }
        Some(self.mirror_in(&mut mirrors, core, room))
    }

    /// The mirror of `room` on this node, started if needed (subscribed to the room's subject
    /// before this returns, so nothing published after it is missed).
    fn mirror(&self, core: &Core, room: RoomId) -> Arc<Mirror> {
        let mut mirrors = self.mirrors.lock();
        self.mirror_in(&mut mirrors, core, room)
    }

    fn mirror_in(
        &self,
        mirrors: &mut HashMap<RoomId, Arc<Mirror>>,
        core: &Core,
        room: RoomId,
    ) -> Arc<Mirror> {
        if let Some(m) = mirrors.get(&room) {
            return m.clone();
        }
        let mirror = Arc::new(Mirror {
            room,
            stale: AtomicU64::new(0),
            synced: AtomicU64::new(0),
            syncing: tokio::sync::Mutex::new(()),
            retired: std::sync::atomic::AtomicBool::new(false),
            state: Mutex::new(MirrorState {
                members: HashMap::new(),
                shards: core.inner.shared.fanout.room_shards(),
                joining: 0,
                awaiting: HashMap::new(),
                fresh: HashMap::new(),
                early_marks: HashMap::new(),
                last_message: 0,
            }),
            task: Mutex::new(None),
        });
        mirrors.insert(room, mirror.clone());
        mirror
    }

    /// Subscribes `mirror` to its room's subject (once).
    async fn subscribe(&self, core: &Core, mirror: &Arc<Mirror>) -> Result<(), ChatError> {
        // (A subscription whose stream ended is made again.)
        let live = |task: &Option<tokio::task::JoinHandle<()>>| {
            task.as_ref().is_some_and(|t| !t.is_finished())
        };
        if live(&mirror.task.lock()) {
            return Ok(());
        }
        let cluster = self.cluster.clone();
        let room = mirror.room;
        let events = self
            .runtime
            .spawn(async move { cluster.subscribe_room(room.as_u64()).await })
            .await
            .map_err(|e| ChatError::General(e.to_string()))?
            .map_err(cluster_error)?;
        let mut task = mirror.task.lock();
        if live(&task) || mirror.retired.load(Ordering::SeqCst) {
            return Ok(());
        }
        let weak = Arc::downgrade(&core.inner);
        let m = mirror.clone();
        *task = Some(self.runtime.spawn(async move {
            let mut events = events;
            while let Some(frame) = events.next().await {
                let Some(inner) = weak.upgrade() else { return };
                let core = Core { inner };
                let Some(node) = core.node() else { return };
                match wire::decode::<Delivery>(&frame) {
                    Ok(delivery) => m.apply(&node, &core.inner.shared, delivery),
                    Err(e) => {
                        tracing::error!(room = %m.room, error = %e, "a delivery could not be read")
                    }
                }
            }
            tracing::warn!(room = %m.room, "a mirror's subscription ended; made again at its next resync");
            if let Some(node) = weak.upgrade().and_then(|inner| Core { inner }.node()) {
                node.mark_stale(&m);
            }
        }));
        Ok(())
    }

    /// Forwards `call` to `owner`, and its answer back.
    pub(crate) async fn forward(&self, owner: &str, call: &Call) -> Reply {
        let frame = wire::encode(call)?;
        let cluster = self.cluster.clone();
        let owner_id = owner.to_string();
        let answer = self
            .runtime
            .spawn(async move { cluster.request(&owner_id, frame).await })
            .await
            .map_err(|e| ChatError::General(e.to_string()))?;
        match answer {
            Ok(bytes) => wire::decode::<Reply>(&bytes)?,
            Err(e) => {
                // The owner may be gone: ask again next time.
                self.owners.lock().remove(&call.room());
                Err(cluster_error(e))
            }
        }
    }

    /// Runs `call` where `room` lives: `Ok(None)` if that is here (the caller goes on
    /// locally), else the owner's answer. A room that moved meanwhile is routed again.
    pub(crate) async fn remote(
        &self,
        core: &Core,
        call: impl Fn() -> Call,
    ) -> Result<Option<Answer>, ChatError> {
        let room = call().room();
        // How often this node told the room's owner who of its sessions is in the room, during
        // this call (the owner may have changed since, or restarted the room: it hears again).
        let mut rejoins = 0;
        let mut last = None;
        for _ in 0..ROUTE_TRIES {
            match self.route(core, room).await? {
                Route::Local => return Ok(None),
                Route::Remote(owner) => {
                    if forwarded() {
                        return Err(ChatError::RoomUnavailable(format!(
                            "room {room} moved to node {owner}"
                        )));
                    }
                    // This node's members first catch up with the room (after an outage),
                    // so that what the call changes reaches them live.
                    let mirror = self.mirrors.lock().get(&room).cloned();
                    if let Some(mirror) = mirror.filter(|m| m.is_stale()) {
                        self.resync(core, &mirror).await;
                    }
                    match self.forward(&owner, &call()).await {
                        Err(ChatError::RoomUnavailable(why)) => {
                            tracing::debug!(room = %room, %why, "routing a call again");
                            self.owners.lock().remove(&room);
                            last = Some(why);
                            continue;
                        }
                        // The room changed owners (or its owner restarted it) and it has not
                        // heard yet that this node's members are in it: it hears now, and the
                        // call goes again (to wherever the room is then: a rejoin that failed
                        // because the room moved on is made with its next owner).
                        Err(ChatError::NotJoined(who)) if rejoins < REJOIN_TRIES => {
                            let also = UserId::new(&who)
                                .ok()
                                .and_then(|u| core.inner.shared.session_of(&u));
                            match self.rejoin(room, &owner, also).await {
                                Ok(true) => rejoins += 1,
                                Ok(false) => return Err(ChatError::NotJoined(who)),
                                Err(e) => {
                                    tracing::debug!(room = %room, error = %e, "a rejoin failed; routing again");
                                    self.owners.lock().remove(&room);
                                    last = Some(e.to_string());
                                }
                            }
                        }
                        other => return other.map(Some),
                    }
                }
            }
        }
        Err(ChatError::RoomUnavailable(match last {
            Some(why) => format!("room {room} is not reachable now (retry): {why}"),
            None => format!("room {room} kept moving between nodes"),
        }))
    }

    /// Tells `owner` who of this node's sessions is in `room` (after it took the room over).
    /// `false` if none is.
    /// `also`: a local session the owner refused as not in the room; told too if it is in it
    /// here (the mirror may not list it yet: this node's lost lease is still handing its members
    /// over to the mirror).
    async fn rejoin(
        &self,
        room: RoomId,
        owner: &str,
        also: Option<Arc<Session>>,
    ) -> Result<bool, ChatError> {
        let mirror = self.mirrors.lock().get(&room).cloned();
        let mut members = mirror
            .map(|m| m.members_with_presence())
            .unwrap_or_default();
        if let Some(s) = also.filter(|s| !members.iter().any(|m| m.user == *s.user())) {
            members.extend(rejoining(&s, room));
        }
        if members.is_empty() {
            return Ok(false);
        }
        let call = Call::Rejoin {
            room,
            node: self.me.to_string(),
            members,
        };
        self.forward(owner, &call).await.map(|_| true)
    }

    /// From now on every mirror may have missed deliveries (the connection to NATS went down,
    /// or the server dropped room events): each is resynced once the connection is up.
    fn mark_all_stale(&self) {
        let generation = self.outages.fetch_add(1, Ordering::SeqCst) + 1;
        for mirror in self.mirrors.lock().values() {
            mirror.stale.fetch_max(generation, Ordering::SeqCst);
        }
    }

    /// Resyncs every stale mirror.
    async fn resync_all(&self, core: &Core) {
        let stale: Vec<Arc<Mirror>> = self
            .mirrors
            .lock()
            .values()
            .filter(|m| m.is_stale())
            .cloned()
            .collect();
        for mirror in stale {
            self.resync(core, &mirror).await;
        }
    }

    fn mark_stale(&self, mirror: &Mirror) {
        let generation = self.outages.fetch_add(1, Ordering::SeqCst) + 1;
        mirror.stale.fetch_max(generation, Ordering::SeqCst);
    }

    /// A mirror that may have missed deliveries catches up: the room's owner hears who of this
    /// node is in it (`Call::Rejoin`), registers them again if it had counted them gone, and
    /// tells them `on_chat_room_recovered` with the room's last sequence number, so that they
    /// fetch what they missed from history. A room nobody owns is taken. Stays stale if the
    /// owner could not be reached (tried again by housekeeping, and before the next call).
    async fn resync(&self, core: &Core, mirror: &Arc<Mirror>) {
        let _one = mirror.syncing.lock().await;
        let generation = mirror.stale.load(Ordering::SeqCst);
        if generation <= mirror.synced.load(Ordering::SeqCst) {
            return;
        }
        let room = mirror.room;
        // Subscribed first (a mirror made while cut off could not be), so that nothing the
        // owner publishes after it hears is missed.
        if let Err(e) = self.subscribe(core, mirror).await {
            tracing::debug!(room = %room, error = %e, "a mirror's resync failed");
            return;
        }
        let done = match self.cluster.owner_of(room.as_u64()).await {
            Ok(Some(owner)) if owner != *self.me => {
                self.learned_owner(room, &owner);
                match self.rejoin(room, &owner, None).await {
                    Ok(_) => true,
                    Err(e) => {
                        tracing::debug!(room = %room, error = %e, "a mirror's resync failed");
                        false
                    }
                }
            }
            // Ours again (its members are the actor's), or nobody's: taken.
            Ok(Some(_)) => true,
            Ok(None) => {
                self.owners.lock().remove(&room);
                self.route(core, room).await.is_ok()
            }
            Err(e) => {
                tracing::debug!(room = %room, error = %e, "a mirror's resync failed");
                false
            }
        };
        if done {
            mirror.synced.fetch_max(generation, Ordering::SeqCst);
        }
    }

    /// A local session is about to join a room another node owns: its mirror is subscribed
    /// first, so the owner's deliveries after the join reach it.
    pub(crate) async fn before_remote_join(
        &self,
        core: &Core,
        room: RoomId,
    ) -> Result<Arc<Mirror>, ChatError> {
        let mirror = self.mirror(core, room);
        mirror.state.lock().joining += 1;
        if let Err(e) = self.subscribe(core, &mirror).await {
            mirror.state.lock().joining -= 1;
            return Err(e);
        }
        Ok(mirror)
    }

    /// The remote join of `session` ended (`joined`: it is a member now).
    pub(crate) fn after_remote_join(
        &self,
        core: &Core,
        mirror: &Arc<Mirror>,
        session: &Arc<Session>,
        joined: bool,
    ) {
        let early = {
            let mut state = mirror.state.lock();
            state.joining -= 1;
            state.early_marks.remove(session.user())
        };
        if let (true, Some(mark)) = (joined, early) {
            session.confirm_room_mark(mirror.room, mark);
        }
        if joined {
            mirror.await_joined(session.clone());
            // The owner published `Joined` before it answered; should it never arrive (lost
            // to an outage), the member is fed from now on.
            let (mirror, session) = (mirror.clone(), session.clone());
            let shared = core.inner.shared.clone();
            let wait = self.cluster.config().request_timeout;
            self.runtime.spawn(async move {
                tokio::time::sleep(wait).await;
                let late = {
                    let state = mirror.state.lock();
                    state
                        .awaiting
                        .get(session.user())
                        .is_some_and(|s| Arc::ptr_eq(s, &session))
                };
                if late {
                    tracing::debug!(room = %mirror.room, user = %session.user(), "no Joined delivery came: fed from now on");
                    mirror.add(&shared, session);
                }
            });
        } else {
            self.drop_idle_mirror(mirror);
        }
    }

    /// A local session left a room another node owns.
    pub(crate) fn after_remote_leave(&self, core: &Core, room: RoomId, user: &UserId) {
        let mirror = self.mirrors.lock().get(&room).cloned();
        if let Some(mirror) = mirror {
            if let Some(session) = mirror.remove(&core.inner.shared, user) {
                session.exited(room);
            }
            self.drop_idle_mirror(&mirror);
        }
    }

    fn drop_idle_mirror(&self, mirror: &Arc<Mirror>) {
        if mirror.is_idle() {
            let mut mirrors = self.mirrors.lock();
            if mirrors
                .get(&mirror.room)
                .is_some_and(|m| Arc::ptr_eq(m, mirror))
                && mirror.is_idle()
            {
                mirrors.remove(&mirror.room);
                mirror.stop();
            }
        }
    }

    /// A local session's presence changed in `room`, which another node owns: that node hears.
    pub(crate) fn presence_changed(&self, room: RoomId, session: &Arc<Session>) {
        // Taken as a room actor takes it (the next change notifies again).
        let Some(offline_since) = session.take_room_notice(room) else {
            return;
        };
        let owner = self.owners.lock().get(&room).map(|(o, _)| o.clone());
        let owner = match owner {
            Some(owner) => owner,
            None => {
                // Not heard of lately: found first.
                let Some(core) = self.core() else { return };
                let (room_id, session) = (room, session.clone());
                self.runtime.spawn(async move {
                    let Some(node) = core.node() else { return };
                    if let Ok(Route::Remote(owner)) = node.route(&core, room_id).await {
                        if let Some(offline_since) = session.room_presence(room_id) {
                            session.take_room_notice(room_id);
                            node.send_in_order(
                                owner,
                                Call::Presence {
                                    room: room_id,
                                    user: session.user().clone(),
                                    node: node.me.to_string(),
                                    offline_since,
                                },
                            );
                        }
                    }
                });
                return;
            }
        };
        self.send_in_order(
            owner,
            Call::Presence {
                room,
                user: session.user().clone(),
                node: self.me.to_string(),
                offline_since,
            },
        );
    }

    /// The engine-wide log (super admins) into the local store.
    pub(crate) async fn catch_up_engine(&self, core: &Core) -> Result<(), ChatError> {
        let cluster = self.cluster.clone();
        // Read in full: every node appends to it (see `append_engine_wide`).
        let applied = 0;
        let entries = self
            .runtime
            .spawn(async move { cluster.replay(ENGINE_LOG, applied).await })
            .await
            .map_err(|e| ChatError::General(e.to_string()))?
            .map_err(cluster_error)?;
        if entries.is_empty() {
            if applied == 0 {
                self.log.reset(ENGINE_LOG, None, 0, 0);
            }
            return Ok(());
        }
        let store = core.store()?;
        let mut last = None;
        for entry in &entries {
            // The engine-wide log has no snapshots.
            if let LogFrame::Sets(sets) = wire::decode::<LogFrame<Vec<u8>>>(&entry.payload)? {
                for set in sets {
                    drop(store.apply_replicated(&set).map_err(crate::storage_error)?);
                }
            }
            last = Some(entry.seq);
        }
        {
            let mut rooms = self.log.rooms.lock();
            let log = rooms.entry(ENGINE_LOG).or_default();
            if !log.running && log.pending.is_empty() {
                log.expected = last;
                log.failed = None;
            }
        }
        let admins = store
            .read(|reader| reader.super_admins())
            .await
            .and_then(|r| r)
            .map_err(crate::storage_error)?;
        *core.inner.super_admins.write() = admins.into_iter().collect();
        Ok(())
    }

    /// Claims this node's id slot (0 to 1023): a lease on a key no room has (rooms' ids are
    /// times in microseconds), kept alive with the node.
    async fn claim_slot(&self) -> Result<u64, ChatError> {
        let start = self
            .me
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
            % ID_SLOTS;
        for k in 0..ID_SLOTS {
            let slot = (start + k) % ID_SLOTS;
            let cluster = self.cluster.clone();
            let got = self
                .runtime
                .spawn(async move { cluster.acquire(SLOT_KEYS - slot).await })
                .await
                .map_err(|e| ChatError::General(e.to_string()))?;
            match got {
                Ok(lease) => {
                    let keeper = lease.keep_alive();
                    self.watch_slot(slot, &keeper);
                    // (Under `owned`'s lock, as `stop` takes it: a stopping node holds no slot.)
                    let owned = self.owned.lock();
                    if self.stopping.load(Ordering::SeqCst) {
                        drop(owned);
                        drop(self.runtime.spawn(async move { keeper.release().await }));
                        return Err(ChatError::EngineStopped);
                    }
                    *self.slot.lock() = Some(keeper);
                    return Ok(slot);
                }
                Err(e) if e.kind() == ErrorKind::LeaseHeld => continue,
                Err(e) => return Err(cluster_error(e)),
            }
        }
        Err(ChatError::ExceedServiceLimit(format!(
            "the cluster has {ID_SLOTS} nodes already"
        )))
    }

    /// When the node's slot lease is lost (the node was cut off from NATS for a lease time, so
    /// other nodes counted it gone), it takes the slot again once it can and tells the owners
    /// of its rooms who of its sessions is in them.
    fn watch_slot(&self, slot: u64, keeper: &LeaseKeeper) {
        let mut status = keeper.subscribe();
        let weak = self.core.get().cloned();
        self.runtime.spawn(async move {
            let _ = status
                .wait_for(|s| matches!(s, roomcast_cluster::LeaseStatus::Lost(_)))
                .await;
            // No message id from a slot another node may hold now.
            if let Some(inner) = weak.as_ref().and_then(|w| w.upgrade()) {
                inner
                    .shared
                    .id_slot
                    .store(crate::SLOT_LOST, Ordering::SeqCst);
            }
            loop {
                let Some(core) = weak.as_ref().and_then(|w| w.upgrade()).map(|inner| Core { inner }) else {
                    return;
                };
                if core.is_stopped() {
                    return;
                }
                let Some(node) = core.node() else { return };
                match node.cluster.acquire(SLOT_KEYS - slot).await {
                    Ok(lease) => {
                        let keeper = lease.keep_alive();
                        node.watch_slot(slot, &keeper);
                        *node.slot.lock() = Some(keeper);
                        core.inner.shared.id_slot.store(slot, Ordering::SeqCst);
                        tracing::info!(node = %node.me, "back in the cluster; telling the rooms' owners who is in");
                        node.mark_all_stale();
                        node.resync_all(&core).await;
                        return;
                    }
                    // Another node took the slot meanwhile: this one takes a free one, so that
                    // their message ids never meet.
                    Err(e) if e.kind() == ErrorKind::LeaseHeld => match node.claim_slot().await {
                        Ok(new) => {
                            core.inner.shared.id_slot.store(new, Ordering::SeqCst);
                            tracing::warn!(node = %node.me, old = slot, new, "the node's id slot was taken while it was away: it took another");
                            node.mark_all_stale();
                            node.resync_all(&core).await;
                            return;
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "taking another id slot failed");
                            tokio::time::sleep(node.cluster.config().lease_ttl / 4).await;
                        }
                    },
                    Err(e) => {
                        tracing::debug!(error = %e, "taking the node's slot again failed");
                        tokio::time::sleep(node.cluster.config().lease_ttl / 4).await;
                    }
                }
            }
        });
    }

    /// Claims a new room's id (its lease): `false` if the id is taken.
    pub(crate) async fn claim(&self, room: RoomId) -> Result<bool, ChatError> {
        let cluster = self.cluster.clone();
        let acquired: Result<Option<roomcast_cluster::Lease>, ClusterError> = self
            .runtime
            .spawn(async move {
                let lease = cluster.acquire(room.as_u64()).await?;
                // A room id is new only if no room ever logged under it.
                match cluster.last_seq(room.as_u64()).await? {
                    None => Ok(Some(lease)),
                    Some(_) => {
                        let _ = lease.release().await;
                        Ok(None)
                    }
                }
            })
            .await
            .map_err(|e| ChatError::General(e.to_string()))?;
        match acquired {
            Ok(Some(lease)) => {
                self.terms.lock().insert(room, lease.revision());
                let keeper = lease.keep_alive();
                self.watch_lease(room, &keeper);
                if !self.hold(room, keeper) {
                    return Err(ChatError::EngineStopped);
                }
                self.log.reset(room.as_u64(), None, 0, 0);
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(e) if e.kind() == ErrorKind::LeaseHeld => Ok(false),
            Err(e) => Err(cluster_error(e)),
        }
    }

    /// A destroyed room: out of the directory, its log purged, its lease released.
    pub(crate) fn destroyed(&self, room: RoomId) {
        self.publish(room, &Delivery::Destroyed);
        let keeper = self.owned.lock().remove(&room);
        let cluster = self.cluster.clone();
        self.runtime.spawn(async move {
            if let Err(e) = cluster.remove_room_summary(room.as_u64()).await {
                tracing::warn!(room = %room, error = %e, "a destroyed room stays in the directory");
            }
            if let Err(e) = cluster.purge(room.as_u64()).await {
                tracing::warn!(room = %room, error = %e, "a destroyed room's log was not purged");
            }
            if let Some(keeper) = keeper {
                let _ = keeper.release().await;
            }
        });
        self.log.forget(room.as_u64());
        self.summaries.lock().remove(&room);
        self.terms.lock().remove(&room);
    }
}

/// Serves the calls other nodes forward to this one.
async fn serve(node: Weak<Node>, mut requests: roomcast_cluster::NodeRequests) {
    while let Some(request) = requests.next().await {
        let Some(n) = node.upgrade() else { return };
        let Some(core) = n.core() else { return };
        let call = match wire::decode::<Call>(request.payload()) {
            Ok(call) => call,
            Err(e) => {
                let reply: Reply = Err(e);
                if let Ok(frame) = wire::encode(&reply) {
                    let _ = request.respond(frame).await;
                }
                continue;
            }
        };
        // Presence and rejoins are applied in the order they came (a flap must end on its
        // last state); everything else runs concurrently.
        let ordered = matches!(call, Call::Presence { .. } | Call::Rejoin { .. });
        let work = async move {
            let mut reply: Reply = FORWARDED.scope((), core.serve_call(call)).await;
            if let Err(ChatError::EngineStopped) = reply {
                // This engine is going, not the caller's: the room will be elsewhere (retry).
                reply = Err(ChatError::RoomUnavailable(
                    "the room's node is stopping; the room moves (retry)".into(),
                ));
            }
            let max = node_max_payload(&core);
            reply = match reply {
                // Too big for one NATS message, or for one record (4 MiB): in parts.
                Ok(Answer::History(page))
                    if wire::encode(&page).map_or(true, |f| f.len() > max.saturating_sub(64)) =>
                {
                    Ok(Answer::HistoryPart(fitting_part(page, max)))
                }
                other => other,
            };
            if wire::encode(&reply).map_or(true, |f| f.len() > max) {
                reply = Err(ChatError::InvalidParam(format!(
                    "the answer is larger than a NATS message ({max} bytes): ask for a smaller page"
                )));
            }
            match wire::encode(&reply) {
                Ok(frame) => {
                    let _ = request.respond(frame).await;
                }
                Err(e) => tracing::error!(error = %e, "a reply could not be encoded"),
            }
        };
        if ordered {
            work.await;
        } else {
            tokio::spawn(work);
        }
    }
}

/// The longest start of `page` that fits in a reply of `max` bytes (at least one message: a
/// message fits in a NATS message, see `Node::check_message_size`), with the cursor after its
/// last message.
fn fitting_part(
    mut page: roomcast_model::ChatCursorResult<roomcast_model::ChatMessage>,
    max: usize,
) -> roomcast_model::ChatCursorResult<roomcast_model::ChatMessage> {
    // The page's own framing, generously.
    let mut room_left = max.saturating_sub(4096);
    let mut keep = 0;
    for message in &page.data {
        let size = wire::encode(message).map_or(usize::MAX, |f| f.len());
        if keep > 0 && size > room_left {
            break;
        }
        room_left = room_left.saturating_sub(size);
        keep += 1;
    }
    page.data.truncate(keep);
    page.cursor = page.data.last().map(roomcast_model::ChatMessage::seq);
    page
}

fn node_max_payload(core: &Core) -> usize {
    core.node().map_or(usize::MAX, |n| n.cluster.max_payload())
}

/// Publishes the outbox, in order.
async fn publish(
    cluster: Cluster,
    mut outgoing: tokio::sync::mpsc::UnboundedReceiver<(RoomId, Vec<u8>)>,
) {
    while let Some((room, frame)) = outgoing.recv().await {
        if let Err(e) = cluster
            .publish_room(room.as_u64(), Bytes::from(frame))
            .await
        {
            tracing::warn!(room = %room, error = %e, "a delivery for other nodes was not published");
        }
    }
}

/// Sends ordered calls (presence, rejoins) one after the other.
async fn send_ordered(
    node: Weak<Node>,
    mut calls: tokio::sync::mpsc::UnboundedReceiver<(Arc<str>, Call)>,
) {
    while let Some((to, call)) = calls.recv().await {
        let Some(n) = node.upgrade() else { return };
        if let Err(e) = n.forward(&to, &call).await {
            tracing::debug!(node = %to, error = %e, "an ordered call failed");
        }
    }
}

/// Follows a user's subject for its session on this node: answers `Hello` from another node
/// with the rooms the session is in, and attaches the session to the rooms the user is in
/// through its other nodes.
async fn follow_user(
    core: Weak<crate::Inner>,
    session: Weak<Session>,
    mut messages: roomcast_cluster::UserMessages,
) {
    while let Some(message) = messages.next().await {
        let (Some(inner), Some(session)) = (core.upgrade(), session.upgrade()) else {
            return;
        };
        let core = Core { inner };
        let Some(node) = core.node() else { return };
        if message.from.as_deref() == Some(&*node.me) {
            continue;
        }
        match wire::decode::<UserNotice>(&message.payload) {
            Ok(UserNotice::Hello) => {
                let rooms = session.rooms();
                if !rooms.is_empty() {
                    node.tell_user(session.user(), &UserNotice::In(rooms));
                }
            }
            Ok(UserNotice::In(rooms)) => {
                for room in rooms {
                    if session.is_in(room) {
                        continue;
                    }
                    match core.attach_room(&session, room).await {
                        Ok(_) | Err(ChatError::AlreadyJoined) => {}
                        Err(e) => {
                            tracing::debug!(user = %session.user(), room = %room, error = %e, "a session was not attached to its user's room")
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "a notice on a user's subject could not be read"),
        }
    }
}

/// After each outage of the connection to NATS (or events the server dropped), this node's
/// mirrors catch up with their rooms as soon as the connection is up.
async fn watch_connection(
    node: Weak<Node>,
    mut connection: tokio::sync::watch::Receiver<roomcast_cluster::Connection>,
) {
    let mut outages = connection.borrow_and_update().outages;
    while connection.changed().await.is_ok() {
        let now = *connection.borrow_and_update();
        let Some(n) = node.upgrade() else { return };
        if now.outages > outages {
            outages = now.outages;
            tracing::warn!(node = %n.me, "lost room events (NATS went away, or dropped them): the rooms catch up");
            n.mark_all_stale();
        }
        if now.connected {
            let Some(core) = n.core() else { return };
            if core.is_stopped() {
                return;
            }
            n.resync_all(&core).await;
        }
    }
}

/// Keeps the local directory in step with the cluster's.
async fn watch_directory(
    node: Weak<Node>,
    mut directory: roomcast_cluster::RoomDirectory,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    if directory.started_empty() {
        if let Some(ready) = ready.take() {
            let _ = ready.send(());
        }
    }
    while let Some(change) = directory.next().await {
        let Some(n) = node.upgrade() else { return };
        let Some(core) = n.core() else { return };
        let change = match change {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "the room directory's watch failed");
                continue;
            }
        };
        let room = RoomId::from_u64(change.room);
        let shared = &core.inner.shared;
        match change.summary {
            Some(summary) if !n.owns(room) => {
                match wire::decode::<roomcast_model::ChatRoom>(&summary) {
                    Ok(snapshot) => match shared.directory.get(room) {
                        Some(entry) if !entry.is_destroyed() => {
                            if entry.live_actor().is_none() {
                                shared.directory.set_summary(&entry, snapshot);
                            }
                        }
                        _ => shared
                            .directory
                            .insert(crate::directory::RoomEntry::new(snapshot)),
                    },
                    Err(e) => {
                        tracing::warn!(room = %room, error = %e, "a directory entry could not be read")
                    }
                }
            }
            Some(_) => {}
            None => {
                // Out of the list. The room's mirror here ends with the room's own `Destroyed`
                // delivery, after the room's last events (this watch is not ordered with them).
                if !n.owns(room) {
                    shared.directory.remove(room);
                    n.owners.lock().remove(&room);
                }
            }
        }
        if change.current {
            if let Some(ready) = ready.take() {
                let _ = ready.send(());
            }
        }
    }
}

/// Every half lease: directory summaries of owned rooms that changed are put again; mirrored
/// rooms whose owner is gone are taken over; the engine-wide log is read again.
async fn housekeeping(node: Weak<Node>) {
    loop {
        let period = match node.upgrade() {
            Some(n) => n.cluster.config().lease_ttl / 4,
            None => return,
        };
        tokio::time::sleep(period.max(Duration::from_millis(50))).await;
        let Some(n) = node.upgrade() else { return };
        let Some(core) = n.core() else { return };
        if core.is_stopped() {
            return;
        }
        n.put_summaries(&core).await;
        n.check_member_nodes(&core).await;
        n.forget_gone_users();
        // Rooms this node has members in: if nobody owns one any more, take it; if the mirror
        // may have missed deliveries (a resync after an outage failed), try again.
        let mirrored: Vec<Arc<Mirror>> = n.mirrors.lock().values().cloned().collect();
        for mirror in mirrored {
            let room = mirror.room;
            if mirror.is_stale() {
                n.resync(&core, &mirror).await;
                continue;
            }
            match n.cluster.owner_of(room.as_u64()).await {
                Ok(None) => {
                    n.owners.lock().remove(&room);
                    if let Err(e) = n.route(&core, room).await {
                        tracing::debug!(room = %room, error = %e, "taking over a room failed");
                    }
                }
                Ok(Some(owner)) => n.learned_owner(room, &owner),
                Err(_) => {}
            }
        }
        if let Err(e) = n.catch_up_engine(&core).await {
            tracing::debug!(error = %e, "reading the engine-wide log failed");
        }
    }
}

impl Core {
    /// Serves a call another node forwarded (as if it was made here; never forwarded again).
    pub(crate) async fn serve_call(&self, call: Call) -> Reply {
        Ok(match call {
            Call::Join {
                room,
                user,
                node,
                keeps_copy,
                offline_since,
                attach,
            } => {
                self.owned_here(room).await?;
                if let Some(n) = self.node() {
                    n.note_member_node(&node, room);
                }
                let msg = crate::room_actor::JoinRemote {
                    user,
                    node,
                    keeps_copy,
                    offline_since,
                    attach,
                };
                let (room, copy_from, mark) = self.room_call(room, msg).await?;
                Answer::Joined {
                    room,
                    copy_from,
                    mark,
                }
            }
            Call::Leave {
                room,
                user,
                owner_may_leave,
            } => {
                self.leave_room(&user, room, owner_may_leave).await?;
                Answer::Unit
            }
            Call::Send { from, message } => {
                Answer::Message(self.send_message(&from, message).await?)
            }
            Call::Apply { room, command } => {
                self.owned_here(room).await?;
                Answer::Failures(
                    self.room_call(room, crate::room_actor::Apply(command))
                        .await?,
                )
            }
            Call::Recall {
                room,
                by,
                seq,
                reason,
                as_moderator,
            } => {
                self.recall_message(&by, room, seq, reason, as_moderator)
                    .await?;
                Answer::Unit
            }
            Call::Pin {
                room,
                by,
                seq,
                reason,
            } => {
                self.pin_message(&by, room, seq, reason).await?;
                Answer::Unit
            }
            Call::History {
                room,
                viewer,
                query,
            } => Answer::History(self.fetch_history(&viewer, room, query).await?),
            Call::AuditLog {
                room,
                viewer,
                before,
                page_size,
            } => Answer::Audit(
                self.fetch_audit_log(&viewer, room, before, page_size)
                    .await?,
            ),
            Call::Query {
                room,
                viewer,
                query,
            } => Answer::Query(self.query(&viewer, room, query).await?),
            Call::Info { room, viewer } => Answer::Room(self.room_info(&viewer, room).await?),
            Call::Stats { room } => Answer::Stats(self.room_stats(room).await?),
            Call::Destroy { room, user } => {
                self.destroy_room(&user, room).await?;
                Answer::Unit
            }
            Call::LocalMessages {
                room,
                user,
                before,
                count,
                current,
            } => {
                self.owned_here(room).await?;
                let store = self.store()?;
                let now = self.inner.shared.clock.now_ms();
                let read = store.read(move |reader| {
                    crate::local_messages(reader, &user, room, current, before, count, now)
                });
                let settled = store.commit();
                let messages = read.await.and_then(|r| r).map_err(crate::storage_error)?;
                settled.await.map_err(crate::storage_error)?;
                Answer::Messages(messages)
            }
            Call::Broadcast {
                room,
                from,
                message,
            } => {
                self.owned_here(room).await?;
                let msg = crate::room_actor::Broadcast {
                    except: self
                        .inner
                        .shared
                        .session_of(&from)
                        .map(|s| s.mailbox().id()),
                    from,
                    message,
                    msg_id: self.inner.shared.next_message_id()?,
                };
                self.room_call(room, msg).await?;
                Answer::Unit
            }
            Call::Presence {
                room,
                user,
                node,
                offline_since,
            } => {
                self.owned_here(room).await?;
                let (addr, _held) = self.room_actor(room).await?;
                addr.do_send(crate::room_actor::RemotePresence {
                    user,
                    node,
                    offline_since,
                });
                Answer::Unit
            }
            Call::Ping => Answer::Unit,
            Call::Rejoin {
                room,
                node,
                members,
            } => {
                self.owned_here(room).await?;
                if let Some(n) = self.node() {
                    n.note_member_node(&node, room);
                }
                let (addr, _held) = self.room_actor(room).await?;
                addr.do_send(crate::room_actor::Rejoin { node, members });
                Answer::Unit
            }
        })
    }

    /// Fails unless this node owns `room` (taking it if nobody does).
    async fn owned_here(&self, room: RoomId) -> Result<(), ChatError> {
        match self.node() {
            Some(node) => match node.route(self, room).await? {
                Route::Local => Ok(()),
                Route::Remote(owner) => Err(ChatError::RoomUnavailable(format!(
                    "room {room} moved to node {owner}"
                ))),
            },
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a snapshot of room 7 on its own thread: whether it ended within a deadline (a
    /// deadlock holds the thread for good), and the room's log after it.
    fn snapshot_ends(log: Arc<ClusterLog>) -> bool {
        let (tx, rx) = std::sync::mpsc::channel();
        let runner = log.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            let (state_tx, state) = tokio::sync::oneshot::channel();
            let _ = state_tx.send(Ok(RoomState::new()));
            runtime.block_on(runner.snapshot(7, state, 1 << 20));
            let _ = tx.send(());
        });
        let ended = rx.recv_timeout(Duration::from_secs(20)).is_ok();
        ended && log.rooms.try_lock().is_some()
    }

    #[test]
    fn a_snapshot_after_a_failed_append_lets_the_log_go() {
        let log = Arc::new(ClusterLog::default());
        {
            let mut rooms = log.rooms.lock();
            let room = rooms.entry(7).or_default();
            room.failed = Some("refused".into());
            room.snapshotting = true;
        }
        assert!(
            snapshot_ends(log.clone()),
            "the snapshot deadlocked on the room's log"
        );
        assert!(!log.rooms.lock()[&7].snapshotting);
    }

    #[test]
    fn a_snapshot_of_a_room_the_log_forgot_lets_the_log_go() {
        let log = Arc::new(ClusterLog::default());
        assert!(
            snapshot_ends(log.clone()),
            "the snapshot deadlocked on the room's log"
        );
        // Nor is a snapshot made without a cluster to write it to.
        log.rooms.lock().entry(7).or_default().snapshotting = true;
        assert!(snapshot_ends(log.clone()));
        assert!(!log.rooms.lock()[&7].snapshotting);
    }
}
