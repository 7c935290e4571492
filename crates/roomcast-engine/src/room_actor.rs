//! The room actor: a thin shell over one pure [`Room`], with its newest messages cached for
//! replay (the store holds every retained message).
//!
//! For each call it runs the pure rules (`Room::apply`), persists what changed, hands the events
//! to the fan-out shards and replies. It never waits: the store's flush is a [`Commit`] future
//! returned to the caller, who awaits it off the actor. So one room's calls are serial, and a
//! slow disk or a slow member never blocks the room.

use std::collections::HashMap;
use std::sync::Arc;

use actix::{Actor, ActorContext, Addr, AsyncContext, Context, Handler, Message};
use roomcast_model::{
    AttributeFailures, Audience, AuditEntry, ChatCursorResult, ChatError, ChatMessage, ChatRoom,
    ChatRoomEvent, Command, Effects, History, HistoryQuery, MessageData, MessageId,
    MessagePriority, OutgoingMessage, Room, RoomId, SearchDirection, Timer, Timestamp, UserId,
};
use roomcast_store::{Commit, IdempotencyRecord, Pending, Reader, Store, StoreError, WriteSet};

use crate::directory::RoomEntry;
use crate::fanout::Except;
use crate::idempotency::Keys;
use crate::session::{RoomReservation, Session};
use crate::supervisor::{RoomExited, Supervisor};
use crate::{obs, storage_error, ClientEvent, QueryAnswer, RoomQuery, RoomStats, Shared};

/// What a room call answers: its value, and the commit to await before reporting success.
pub(crate) struct Answer<T> {
    pub(crate) value: T,
    /// Resolves once every write made before the answer (the call's own and any racing call's
    /// it observed) is durable.
    pub(crate) durable: Commit,
}

/// A read of the store in flight, in order after the room's writes.
pub(crate) type StoreRead<T> = Pending<Result<T, StoreError>>;

/// `session`'s user joins the room; answers the room as it sees it.
#[derive(Message)]
#[rtype(result = "Result<Answer<ChatRoom>, ChatError>")]
pub(crate) struct Join {
    pub(crate) session: Arc<Session>,
    /// The user's place against the rooms-per-user limit, released once the room answered.
    pub(crate) reservation: Option<RoomReservation>,
    /// Cluster mode: only if the user is a member already (through a session on another
    /// node): this node's session gets the room's deliveries too. `NotJoined` if not a member.
    pub(crate) attach: bool,
    /// Cluster mode: the session got the room's messages up to this sequence number already
    /// (its join reached the room's previous owner, which fed it, then died before it
    /// answered, and this node took the room): its replay holds only later ones.
    pub(crate) seen_through: Option<u64>,
}

/// Cluster mode: `user`, whose session is on node `node`, joins; answers the room as it sees it
/// and where its local copy starts.
#[derive(Message)]
#[rtype(result = "Result<Answer<(ChatRoom, u64, (u64, u64))>, ChatError>")]
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
pub(crate) struct JoinRemote {
    pub(crate) user: UserId,
    pub(crate) node: String,
    pub(crate) keeps_copy: bool,
    pub(crate) offline_since: Option<Timestamp>,
    /// As [`Join::attach`].
    pub(crate) attach: bool,
}

/// Cluster mode: the presence of `user`'s session on node `node` changed.
#[derive(Message)]
#[rtype(result = "()")]
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
pub(crate) struct RemotePresence {
    pub(crate) user: UserId,
    pub(crate) node: String,
    pub(crate) offline_since: Option<Timestamp>,
}

/// Cluster mode: after the room changed owners, node `node` still has these members in it.
#[derive(Message)]
#[rtype(result = "()")]
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
pub(crate) struct Rejoin {
    pub(crate) node: String,
    pub(crate) members: Vec<crate::remote::RejoiningMember>,
}

/// Cluster mode: node `node` is gone (it stopped answering): its sessions' members are offline
/// from now (their grace period runs), unless they have sessions elsewhere.
#[derive(Message)]
#[rtype(result = "()")]
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
pub(crate) struct NodeGone {
    pub(crate) node: String,
    /// Since when it did not answer: what it said after that stands.
    pub(crate) silent_since: std::time::Instant,
}

/// Cluster mode: this node lost the room's lease: the actor stops (cleanly; the room lives on
/// at its new owner).
#[derive(Message)]
#[rtype(result = "()")]
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
pub(crate) struct Evict;

/// `user` leaves the room.
#[derive(Message)]
#[rtype(result = "Result<Answer<()>, ChatError>")]
pub(crate) struct Leave {
    pub(crate) user: UserId,
    pub(crate) owner_may_leave: bool,
}

/// `user` destroys the room (sent by the supervisor).
#[derive(Message)]
#[rtype(result = "Result<Answer<()>, ChatError>")]
pub(crate) struct Destroy {
    pub(crate) user: UserId,
}

/// The room as `viewer` sees it.
#[derive(Message)]
#[rtype(result = "Result<Answer<ChatRoom>, ChatError>")]
pub(crate) struct Info {
    pub(crate) viewer: UserId,
}

/// What a send answers: the message accepted now, or the one a repeat of its idempotency key
/// got before.
pub(crate) enum Sent {
    /// The message as the room accepted it (now, or earlier with this key).
    Message(ChatMessage),
    /// The earlier message of this key, read from the store (a key from before the room was
    /// loaded); `None` if the room's retention has dropped it.
    Stored {
        record: IdempotencyRecord,
        read: StoreRead<Option<roomcast_model::MessageData>>,
    },
}

/// `from` sends a message; answers it as accepted.
#[derive(Message)]
#[rtype(result = "Result<Answer<Sent>, ChatError>")]
pub(crate) struct SendMessage {
    /// The sender's mailbox, which the message skips.
    pub(crate) except: Option<u64>,
    pub(crate) from: UserId,
    pub(crate) message: OutgoingMessage,
    pub(crate) msg_id: MessageId,
}

/// A super admin's broadcast; answers it as accepted.
#[derive(Message)]
#[rtype(result = "Result<Answer<ChatMessage>, ChatError>")]
pub(crate) struct Broadcast {
    /// The broadcaster's mailbox, which the message skips.
    pub(crate) except: Option<u64>,
    pub(crate) from: UserId,
    pub(crate) message: OutgoingMessage,
    pub(crate) msg_id: MessageId,
}

/// A page of history for `viewer`, read from the store after the room's writes.
#[derive(Message)]
#[rtype(result = "Result<Answer<StoreRead<ChatCursorResult<ChatMessage>>>, ChatError>")]
pub(crate) struct FetchHistory {
    pub(crate) viewer: UserId,
    pub(crate) query: HistoryQuery,
}

/// Message `seq` of the room, read from the store after the room's writes, for a member or the
/// owner or an admin (to recall, delete or pin it).
#[derive(Message)]
#[rtype(result = "Result<Answer<StoreRead<Option<MessageData>>>, ChatError>")]
pub(crate) struct ReadMessage {
    pub(crate) viewer: UserId,
    pub(crate) seq: u64,
}

/// A page of the audit log, newest first (owner and admins).
#[derive(Message)]
#[rtype(result = "Result<Answer<StoreRead<ChatCursorResult<AuditEntry>>>, ChatError>")]
pub(crate) struct FetchAuditLog {
    pub(crate) viewer: UserId,
    /// Entries older than this one.
    pub(crate) before: Option<u64>,
    pub(crate) page_size: u32,
}

/// The room's counters.
#[derive(Message)]
#[rtype(result = "Result<Answer<StoreRead<RoomStats>>, ChatError>")]
pub(crate) struct Stats;

/// The sweep found the room idle since `idle_before` (engine clock): it leaves memory if it is
/// still idle and dormant (no online member; those left are exempt from the offline rule).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Hibernate {
    pub(crate) idle_before: i64,
}

/// A state change answered with its per-key failures (moderation, attributes).
#[derive(Message)]
#[rtype(result = "Result<Answer<AttributeFailures>, ChatError>")]
pub(crate) struct Apply(pub(crate) Command);

/// A read of the room's lists and settings.
#[derive(Message)]
#[rtype(result = "Result<Answer<QueryAnswer>, ChatError>")]
pub(crate) struct Query {
    pub(crate) viewer: UserId,
    pub(crate) query: RoomQuery,
}

/// Panics (fault injection for tests of the supervisor's recovery).
#[cfg(feature = "fault-injection")]
#[derive(Message)]
#[rtype(result = "Result<Answer<()>, ChatError>")]
pub(crate) struct Panic;

/// A write set of this room failed to apply: memory is ahead of the store, so the room stops and
/// restarts from what the store holds (fail-stop).
#[derive(Message)]
#[rtype(result = "()")]
struct WriteFailed;

/// A member's session went offline or came back. The room reads the presence from the session
/// when it handles this (the session owns it): the latest state, and when it went offline, so
/// that the grace period runs from when the member left, not from when the room heard.
pub(crate) struct PresenceChanged {
    pub(crate) session: Arc<Session>,
}

impl Message for PresenceChanged {
    type Result = ();
}

/// A member's offline grace period may have ended.
pub(crate) struct ExpireOffline {
    pub(crate) user: UserId,
}

impl Message for ExpireOffline {
    type Result = ();
}

/// A member's mute may have ended.
pub(crate) struct ExpireMute {
    pub(crate) user: UserId,
}

impl Message for ExpireMute {
    type Result = ();
}

/// Messages held for review may be due (see [`RoomActor::release_held`]).
pub(crate) struct ReleaseHeld;

impl Message for ReleaseHeld {
    type Result = ();
}

/// The room's freeze may have ended.
pub(crate) struct ExpireFreeze;

impl Message for ExpireFreeze {
    type Result = ();
}

/// A user's timed block may have ended.
pub(crate) struct ExpireBlock {
    pub(crate) user: UserId,
}

impl Message for ExpireBlock {
    type Result = ();
}

/// How often (in messages) a room looks for messages past the retention age.
const AGE_CHECK_EVERY: u64 = 64;

/// How long a big room holds join and exit events for its staff before sending them together.
const STAFF_BATCH_WINDOW: std::time::Duration = std::time::Duration::from_millis(50);
/// Most join and exit events a big room holds for its staff at once.
const STAFF_BATCH_MAX: usize = 256;

pub(crate) struct RoomActor {
    room: Room,
    /// The newest messages, for replay on join (the store holds all retained ones).
    recent: History,
    /// Sessions of the members added at creation, registered when the actor starts. Later,
    /// members' sessions are looked up in the engine's one session table: a room keeps no second
    /// per-member map (the shards keep the mailbox lists broadcasts walk).
    initial: Vec<Arc<Session>>,
    entry: Arc<RoomEntry>,
    shared: Arc<Shared>,
    store: Store,
    exit: ExitGuard,
    started_at: i64,
    recovered: bool,
    /// Woke from hibernation (see [`RoomStart::woke`]).
    woke: bool,
    /// Set when a call panicked: the actor stops as failed.
    poisoned: bool,
    /// Join and exit events of a big room held for its staff (with whom each skips), sent
    /// together: a join storm costs one delivery per staff member per batch, not per join.
    staff_batch: Vec<(ClientEvent, Vec<UserId>)>,
    staff_flush_scheduled: bool,
    /// The room's members per delivery shard (broadcasts go to shards with members).
    shards: crate::fanout::RoomShards,
    /// Cluster mode: what this node's members get, waiting for the room's log to hold the
    /// writes made before it (`queued` appends at the time), in order; see [`RoomActor::fan`].
    deferred: std::collections::VecDeque<(u64, FanOp)>,
    /// This actor, for the log's wake-ups (set when it starts).
    me: Option<actix::WeakAddr<RoomActor>>,
    /// Set while a join is applied if the joiner's session was offline when it entered, with
    /// when its grace period starts.
    joined_offline: Option<(UserId, i64)>,
    /// The joiner's place against rooms-per-user, while its join is applied.
    joining_reservation: Option<RoomReservation>,
    /// The first members' places against rooms-per-user, until `started` puts them in.
    initial_reservations: Vec<RoomReservation>,
    /// The idempotency keys of the room's messages, for the engine's window.
    keys: Keys,
    /// The idempotency key of the message being sent, while it is applied.
    sending_key: Option<String>,
    /// Messages the members who are not staff have not received yet, in the room's order, with
    /// the mailboxes that must not get them again (the sender's, and those of the staff who got
    /// them at once): a message held for review, and every message accepted behind one. See
    /// [`RoomActor::release_held`].
    held: std::collections::VecDeque<(ChatMessage, Except)>,
    /// Cluster mode: the users each held message skips on other nodes (its sender, the staff
    /// who had it at once), by sequence number.
    held_skip_users: HashMap<u64, Vec<UserId>>,
    /// Cluster mode: members whose sessions are on other nodes, by node: `None` online there,
    /// `Some(since)` offline since then.
    remote: HashMap<UserId, HashMap<String, Option<Timestamp>>>,
    /// Cluster mode: what remote members' local copies need when they leave: whether the copy
    /// is kept, and where the current membership's span starts.
    remote_copies: HashMap<UserId, (bool, u64)>,
    /// Cluster mode: a remote member being joined (its copy is kept).
    remote_joining: Option<(UserId, bool)>,
    /// Cluster mode: members whose node stopped answering (and who had no session elsewhere):
    /// their node may tell the room they are still there when it is back, until they leave
    /// for another reason than their grace period.
    lapsed: std::collections::HashSet<UserId>,
    /// True while a grace period's end is applied.
    expiring: bool,
    /// When each other node last spoke to this room (a join, a rejoin, a presence change).
    last_heard: HashMap<String, std::time::Instant>,
    /// Cluster mode: where the room stands among its membership changes, `(term, count)`: the
    /// term is the revision of this node's lease when it took the room (later owners have
    /// later terms), the count goes up with each departure. A member's session remembers the
    /// mark at which the room last confirmed it (`Session::room_mark`).
    mark: (u64, u64),
    /// Cluster mode: each departed member's latest departure, kept for [`DEPARTURE_KEPT`] (see
    /// [`roomcast_store::Departure`]), with the departures oldest first.
    departed: HashMap<UserId, roomcast_store::Departure>,
    departed_order: std::collections::VecDeque<(Timestamp, UserId)>,
}

/// Cluster mode: how long (engine clock) a member's departure is kept in the room's log, so that
/// a node cut off for up to this long cannot bring the member back after a change of owners.
const DEPARTURE_KEPT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Cluster mode: `session`'s user departed from `room` after the room last confirmed the
/// session's membership (its node missed the departure): that departure.
pub(crate) fn departed_after<'a>(
    departures: impl IntoIterator<Item = &'a roomcast_store::Departure>,
    session: &Session,
    room: RoomId,
) -> Option<&'a roomcast_store::Departure> {
    let mark = session.room_mark(room);
    departures
        .into_iter()
        .find(|d| d.user == *session.user() && mark.is_none_or(|m| d.mark > m))
}

/// What a member that missed its departure `d` is told: why it was removed (nothing if it
/// left).
pub(crate) fn departure_event(
    d: &roomcast_store::Departure,
    room_name: String,
) -> Option<ChatRoomEvent> {
    d.reason.map(|reason| ChatRoomEvent::RemovedFromChatRoom {
        room_id: d.room,
        room_name,
        participant: d.user.clone(),
        reason,
        operator: d.operator.clone(),
        operator_reason: None,
    })
}

/// Cluster mode: whether a member its node still counts in `room` is one no more, and what it
/// is told if so: `None` if it is a member; `Some(event)` if it is not: it departed after the
/// room last confirmed it (`departed`, see [`departed_after`]), or it is blocked (by an owner
/// that did not know it was in: removed as a block removes a member), or banned from rejoining.
/// `lapsed`: the room counted it gone as offline (its departure since forgotten).
pub(crate) fn kept_out(
    room: &Room,
    user: &UserId,
    departed: Option<&roomcast_store::Departure>,
    lapsed: bool,
    now: Timestamp,
) -> Option<Option<ChatRoomEvent>> {
    let banned = room
        .record()
        .live
        .rejoin_banned_until
        .get(user)
        .is_some_and(|&until| until > now);
    let blocked = room.is_blocked(user, now);
    if departed.is_none() && !banned && !blocked {
        return None;
    }
    let name = room.record().spec.name.clone();
    let removed = |reason| ChatRoomEvent::RemovedFromChatRoom {
        room_id: room.id(),
        room_name: name.clone(),
        participant: user.clone(),
        reason,
        operator: None,
        operator_reason: None,
    };
    Some(match departed {
        Some(d) => departure_event(d, name.clone()),
        None if blocked => Some(removed(roomcast_model::LeaveReason::Kicked)),
        None if lapsed => Some(removed(roomcast_model::LeaveReason::Offline)),
        None => None,
    })
}

/// Tells the supervisor when the actor goes away. Dropped without `stopped()` having run means
/// the actor died abnormally (a panic unwound through it); actix does not restart such an actor,
/// so the supervisor forgets it and the next call reloads the room from the store.
struct ExitGuard {
    supervisor: Addr<Supervisor>,
    generation: u64,
    clean: bool,
    room: RoomId,
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        self.supervisor.do_send(RoomExited {
            room: self.room,
            generation: self.generation,
            clean: self.clean,
        });
    }
}

/// Everything a room actor starts with.
pub(crate) struct RoomStart {
    pub(crate) room: Room,
    pub(crate) sessions: Vec<Arc<Session>>,
    pub(crate) entry: Arc<RoomEntry>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) store: Store,
    pub(crate) supervisor: Addr<Supervisor>,
    pub(crate) generation: u64,
    /// When the room was created or activated (engine clock).
    pub(crate) now: i64,
    /// The newest retained messages, loaded from the store.
    pub(crate) recent: History,
    /// True if the room is restarting after its actor died: its members are told.
    pub(crate) recovered: bool,
    /// True if the room is waking from hibernation: its members' offline times stand.
    pub(crate) woke: bool,
    /// The first members' places against rooms-per-user (a new room).
    pub(crate) reservations: Vec<RoomReservation>,
    /// The room's stored idempotency keys.
    pub(crate) keys: Vec<IdempotencyRecord>,
    /// Cluster mode: its members' departures kept.
    pub(crate) departures: Vec<roomcast_store::Departure>,
}

impl RoomActor {
    pub(crate) fn new(mut start: RoomStart) -> RoomActor {
        let held = Self::held_at_start(&start);
        #[allow(unused_mut)]
        let mut term = 0;
        #[cfg(feature = "cluster")]
        if let Some(node) = start.shared.node() {
            term = node.term(start.room.id());
        }
        // Counting on from this term's last departure (a restart under the same lease).
        let count = start
            .departures
            .iter()
            .filter(|d| d.mark.0 == term)
            .map(|d| d.mark.1)
            .max()
            .unwrap_or(0);
        let mut departed_order: Vec<(Timestamp, UserId)> = start
            .departures
            .iter()
            .map(|d| (d.at, d.user.clone()))
            .collect();
        departed_order.sort();
        let departed = std::mem::take(&mut start.departures)
            .into_iter()
            .map(|d| (d.user.clone(), d))
            .collect();
        start
            .recent
            .set_floor(held.front().map(|(m, _): &(ChatMessage, Except)| m.seq()));
        let exit = ExitGuard {
            supervisor: start.supervisor,
            generation: start.generation,
            clean: false,
            room: start.room.id(),
        };
        let shards = start.shared.fanout.room_shards();
        RoomActor {
            shards,
            deferred: std::collections::VecDeque::new(),
            me: None,
            recent: start.recent,
            room: start.room,
            initial: start.sessions,
            entry: start.entry,
            shared: start.shared,
            store: start.store,
            exit,
            started_at: start.now,
            recovered: start.recovered,
            woke: start.woke,
            poisoned: false,
            staff_batch: Vec::new(),
            staff_flush_scheduled: false,
            joined_offline: None,
            joining_reservation: None,
            initial_reservations: start.reservations,
            keys: Keys::new(start.keys),
            sending_key: None,
            held,
            held_skip_users: HashMap::new(),
            remote: HashMap::new(),
            remote_copies: HashMap::new(),
            remote_joining: None,
            lapsed: std::collections::HashSet::new(),
            expiring: false,
            last_heard: HashMap::new(),
            mark: (term, count),
            departed,
            departed_order: departed_order.into(),
        }
    }

    /// Cluster mode: publishes `delivery` for the members on other nodes (nothing when there
    /// are none, or on one node).
    #[allow(unused_variables)]
    fn publish(&self, delivery: impl FnOnce() -> crate::remote::Delivery) {
        #[cfg(feature = "cluster")]
        if self.has_remote() {
            if let Some(node) = self.shared.node() {
                node.publish(self.room.id(), &delivery());
            }
        }
    }

    /// Cluster mode: publishes `delivery` for other nodes even if no member there is known.
    #[allow(unused_variables)]
    fn publish_to_nodes(&self, delivery: crate::remote::Delivery) {
        #[cfg(feature = "cluster")]
        if let Some(node) = self.shared.node() {
            node.publish(self.room.id(), &delivery);
        }
    }

    /// Cluster mode: tells `node` that `user`'s session there gets the room's deliveries from
    /// here on, after the join replay if `replay`.
    fn publish_joined(&self, user: &UserId, node: &str, replay: bool) {
        let (joined, at, mark) = (user.clone(), node.to_string(), self.mark);
        self.publish(|| crate::remote::Delivery::Joined {
            user: joined,
            node: at,
            mark,
        });
        if replay {
            let items: Vec<crate::remote::Item> = self
                .replay_for(user)
                .into_iter()
                .map(crate::remote::Item::Message)
                .collect();
            if !items.is_empty() {
                self.publish(|| crate::remote::Delivery::Replay {
                    user: user.clone(),
                    node: node.to_string(),
                    items,
                    more: false,
                });
            }
        }
    }

    /// Cluster mode: true if members on other nodes may need this room's deliveries (some are
    /// known, or the room was taken over lately and they may not have said so yet).
    /// True in cluster mode.
    fn in_cluster(&self) -> bool {
        #[cfg(feature = "cluster")]
        if self.shared.node().is_some() {
            return true;
        }
        false
    }

    /// Cluster mode: records the departures of `fx` in `set` (see [`RoomActor::mark`]), and
    /// forgets those older than [`DEPARTURE_KEPT`] (but the latest).
    fn record_departures(&mut self, fx: &Effects, set: &mut WriteSet) -> Result<(), StoreError> {
        if fx.left.is_empty() || fx.destroyed || !self.in_cluster() {
            return Ok(());
        }
        let (room, now) = (self.room.id(), self.now());
        // Why each was removed (the first removal event of each; none: it left).
        let mut removed: HashMap<&UserId, (roomcast_model::LeaveReason, Option<UserId>)> =
            HashMap::new();
        for o in &fx.events {
            if let ChatRoomEvent::RemovedFromChatRoom {
                participant,
                reason,
                operator,
                ..
            } = &o.event
            {
                removed
                    .entry(participant)
                    .or_insert_with(|| (*reason, operator.clone()));
            }
        }
        for user in &fx.left {
            self.mark.1 += 1;
            let (reason, operator) = match removed.get(user) {
                Some((reason, operator)) => (Some(*reason), operator.clone()),
                None => (None, None),
            };
            let departure = roomcast_store::Departure {
                room,
                user: user.clone(),
                mark: self.mark,
                at: now,
                reason,
                operator,
            };
            set.put_departure(&departure)?;
            self.departed_order.push_back((now, user.clone()));
            self.departed.insert(user.clone(), departure);
        }
        let keep_from = now.saturating_sub(DEPARTURE_KEPT.as_millis() as i64);
        while self.departed_order.len() > 1
            && self
                .departed_order
                .front()
                .is_some_and(|(at, _)| *at < keep_from)
        {
            let Some((at, user)) = self.departed_order.pop_front() else {
                break;
            };
            if self
                .departed
                .get(&user)
                .is_some_and(|d| d.at == at && d.mark != self.mark)
            {
                self.departed.remove(&user);
                set.remove_departure(room, &user);
            }
        }
        Ok(())
    }

    fn has_remote(&self) -> bool {
        if !self.remote.is_empty() {
            return true;
        }
        #[cfg(feature = "cluster")]
        if let Some(node) = self.shared.node() {
            return node.recently_taken(self.room.id());
        }
        false
    }

    /// The owner and admins in the room whose sessions are on other nodes.
    fn remote_staff(&self) -> Vec<UserId> {
        if self.remote.is_empty() {
            return Vec::new();
        }
        let record = self.room.record();
        std::iter::once(&record.owner)
            .chain(&record.admins)
            .filter(|u| self.remote.contains_key(*u) && self.room.is_member(u))
            .cloned()
            .collect()
    }

    /// True if `user` has an online session on another node.
    fn online_elsewhere(&self, user: &UserId) -> bool {
        self.remote
            .get(user)
            .is_some_and(|nodes| nodes.values().any(Option::is_none))
    }

    /// `user`'s presence across nodes: online if any session is (`None`), else offline since
    /// the last one went.
    fn presence_of(&self, user: &UserId) -> Option<Timestamp> {
        let local = self
            .shared
            .session_of(user)
            .and_then(|s| s.room_presence(self.room.id()));
        let mut since: Option<Timestamp> = None;
        let mut any = false;
        if let Some(local) = local {
            any = true;
            match local {
                None => return None,
                Some(t) => since = Some(t),
            }
        }
        if let Some(nodes) = self.remote.get(user) {
            for state in nodes.values() {
                any = true;
                match state {
                    None => return None,
                    Some(t) => since = Some(since.map_or(*t, |s| s.max(*t))),
                }
            }
        }
        if any {
            since
        } else {
            Some(self.now())
        }
    }

    /// The messages still held for review when the room starts (after a restart, a crash or a
    /// sleep): the oldest one still held at `start.now` and every message behind it, to be
    /// released in order as before; the staff starting in the room had them at once.
    fn held_at_start(start: &RoomStart) -> std::collections::VecDeque<(ChatMessage, Except)> {
        let mut held = std::collections::VecDeque::new();
        let recent = start.recent.newest(usize::MAX);
        let Some(first) = recent
            .iter()
            .position(|m| m.is_held_at(start.now) && !m.is_recalled() && !m.is_shadowed())
        else {
            return held;
        };
        let record = start.room.record();
        let staff: Vec<u64> = start
            .sessions
            .iter()
            .filter(|s| *s.user() == record.owner || record.admins.contains(s.user()))
            .map(|s| s.mailbox().id())
            .collect();
        let staff: Arc<[u64]> = staff.into();
        for m in &recent[first..] {
            if m.is_shadowed() || m.is_recalled() {
                continue;
            }
            let sender = start.shared.session_of(m.from()).map(|s| s.mailbox().id());
            held.push_back((m.clone(), Except::of(sender).and(staff.clone())));
        }
        if let Some(at) = held.front().and_then(|(m, _)| m.held_until()) {
            start
                .shared
                .timers
                .schedule(start.room.id(), Timer::HoldRelease { at });
        }
        held
    }

    fn now(&self) -> i64 {
        self.shared.clock.now_ms()
    }

    fn execute(
        &mut self,
        command: Command,
        joining: Option<Arc<Session>>,
        ctx: &mut Context<Self>,
    ) -> Result<Option<Commit>, ChatError> {
        self.execute_with_failures(command, joining, ctx)
            .map(|(commit, _)| commit)
    }

    fn execute_with_failures(
        &mut self,
        command: Command,
        joining: Option<Arc<Session>>,
        ctx: &mut Context<Self>,
    ) -> Result<(Option<Commit>, AttributeFailures), ChatError> {
        self.execute_full(command, joining, None, ctx)
            .map(|(commit, failures, _)| (commit, failures))
    }

    /// Applies `command`, persists what it changed, delivers its events (the message skipping
    /// `sender`'s mailbox), and returns the commit to await, the attribute failures and the
    /// message sent, if any.
    fn execute_full(
        &mut self,
        command: Command,
        joining: Option<Arc<Session>>,
        sender: Option<u64>,
        ctx: &mut Context<Self>,
    ) -> Result<(Option<Commit>, AttributeFailures, Option<ChatMessage>), ChatError> {
        let dropped_before = self.room.stats();
        let mut fx = match self.room.apply(command) {
            Ok(fx) => fx,
            Err(e) => {
                let after = self.room.stats();
                for (before, now, p) in [
                    (
                        dropped_before.dropped_low,
                        after.dropped_low,
                        MessagePriority::Low,
                    ),
                    (
                        dropped_before.dropped_normal,
                        after.dropped_normal,
                        MessagePriority::Normal,
                    ),
                    (
                        dropped_before.dropped_high,
                        after.dropped_high,
                        MessagePriority::High,
                    ),
                ] {
                    if now > before {
                        obs::message_dropped(p);
                    }
                }
                return Err(e);
            }
        };
        if fx.message.is_some() {
            obs::message_sent();
        }
        let joined = fx.joined.len() as i64 - fx.left.len() as i64;
        if joined != 0 {
            obs::members_changed(joined);
        }
        let failures = std::mem::take(&mut fx.failures);
        let set = match self.write_set(&fx) {
            Ok(set) => set,
            Err(e) => {
                // Fail-stop: memory is ahead of the store. Stop, so that the next call reloads
                // the room from what the store holds.
                tracing::error!(room = %self.room.id(), error = %e, "room write failed; restarting the room");
                ctx.stop();
                return Err(storage_error(e));
            }
        };
        let commit = (!set.is_empty()).then(|| self.submit(set, ctx));
        if fx.record_changed && !fx.destroyed {
            let snapshot = self.room.snapshot(None);
            self.shared.directory.set_summary(&self.entry, snapshot);
        }
        let message = fx.message.clone();
        self.deliver(fx, joining, sender);
        if !self.staff_batch.is_empty() && !self.staff_flush_scheduled {
            self.staff_flush_scheduled = true;
            ctx.run_later(STAFF_BATCH_WINDOW, |act, _| {
                act.staff_flush_scheduled = false;
                act.flush_staff_batch();
            });
        }
        Ok((commit, failures, message))
    }

    /// What `fx` changed, as one write set: the room's record, the message sent (and
    /// retention), the local copies of members who joined or left.
    fn write_set(&mut self, fx: &Effects) -> Result<WriteSet, StoreError> {
        let room = self.room.id();
        let limits = self.room.limits();
        let mut set = WriteSet::new();
        if fx.record_changed {
            if fx.destroyed {
                set.delete_room(room);
            } else {
                set.put_room(self.room.record())?;
            }
        }
        if !fx.destroyed {
            for entry in &fx.audit {
                set.put_audit(room, entry, limits.audit_log_retention)?;
            }
        }
        if let Some((seq, recall)) = &fx.recalled {
            set.recall_message(room, *seq, recall.clone());
        }
        if let Some(message) = &fx.message {
            // Keys whose window ended go first (a key used again is put after).
            for (from, key) in self.keys.take_expired(message.server_time()) {
                set.remove_idempotency(room, &from, &key);
            }
            set.put_message(message.data())?;
            if let Some(key) = &self.sending_key {
                set.put_idempotency(&IdempotencyRecord {
                    room,
                    from: message.from().clone(),
                    key: key.clone(),
                    msg_id: message.msg_id(),
                    seq: message.seq(),
                    at: message.server_time(),
                })?;
            }
            let seq = message.seq();
            let retention = limits.history_retention as u64;
            if seq > retention {
                set.trim_before(room, seq + 1 - retention);
            }
            if seq % AGE_CHECK_EVERY == 0 {
                if let Some(max_age) = limits.history_max_age {
                    let before =
                        message
                            .server_time()
                            .saturating_sub(roomcast_model::ms_to_timestamp(
                                roomcast_model::duration_ms(max_age),
                            ));
                    set.trim_older_than(room, before);
                }
            }
        }
        for user in &fx.joined {
            // A copy that is deleted on exit lives only as long as the membership: the session
            // remembers where it starts. Only a copy that is kept after leaving is written.
            let keeps = match &self.remote_joining {
                Some((remote, keeps)) if remote == user => *keeps,
                _ => self
                    .shared
                    .session_of(user)
                    .is_some_and(|s| !s.deletes_messages_on_exit()),
            };
            if keeps {
                set.open_copy(user.clone(), room, self.copy_from());
            }
        }
        for user in &fx.left {
            let session = self.shared.session_of(user).filter(|s| s.is_in(room));
            let last = self.room.last_seq();
            let (delete, from) = match (&session, self.remote_copies.get(user)) {
                (None, Some(&(keeps, from))) => (!keeps, from),
                _ => (
                    session
                        .as_ref()
                        .is_none_or(|s| s.deletes_messages_on_exit()),
                    session
                        .as_ref()
                        .and_then(|s| s.copy_start(room))
                        .unwrap_or(last + 1),
                ),
            };
            set.close_copy(user.clone(), room, last, from, delete);
        }
        self.record_departures(fx, &mut set)?;
        Ok(set)
    }

    /// Submits `set`; if it fails to apply, the room stops and restarts from the store.
    fn submit(&self, set: WriteSet, ctx: &Context<Self>) -> Commit {
        if set.is_empty() {
            return self.store.commit();
        }
        let me = ctx.address();
        let commit = self.store.submit_or(set, move |_| me.do_send(WriteFailed));
        // Cluster mode: a room's log that grew enough gets a snapshot here, between two of its
        // writes, so that what came before it can go.
        let room = self.room.id();
        if self.store.wants_snapshot(room) {
            self.store.snapshot_room(room);
        }
        commit
    }

    /// Where a joiner's local copy starts: the first message replayed to it, or the next one.
    fn copy_from(&self) -> u64 {
        self.recent
            .newest(self.room.limits().join_replay_count)
            .first()
            .map_or(self.room.last_seq() + 1, ChatMessage::seq)
    }

    fn answer(&self, viewer: &UserId, query: RoomQuery) -> Result<QueryAnswer, ChatError> {
        let room = &self.room;
        Ok(match query {
            RoomQuery::MuteList {
                page_num,
                page_size,
            } => QueryAnswer::MuteList(room.mute_list(viewer, self.now(), page_num, page_size)?),
            RoomQuery::AllowList {
                page_num,
                page_size,
            } => QueryAnswer::Users(room.allow_list(viewer, page_num, page_size)?),
            RoomQuery::IsOnAllowList => QueryAnswer::Bool(room.is_on_allow_list(viewer)?),
            RoomQuery::BlockList {
                page_num,
                page_size,
            } => {
                QueryAnswer::BlockList(room.block_list(viewer, self.now(), page_num, page_size)?)
            }
            RoomQuery::ShadowBanList {
                page_num,
                page_size,
            } => QueryAnswer::Users(room.shadow_ban_list(viewer, page_num, page_size)?),
            RoomQuery::Members { cursor, page_size } => {
                QueryAnswer::Members(room.members_page(viewer, cursor, page_size)?)
            }
            RoomQuery::Announcement => QueryAnswer::Text(room.announcement(viewer)?.to_string()),
            RoomQuery::Attributes { keys } => {
                QueryAnswer::Attributes(room.attributes(viewer, &keys)?)
            }
        })
    }

    /// Applies membership changes to the delivery tables, then delivers the events in order (the
    /// message skipping the `sender`'s mailbox).
    fn deliver(&mut self, fx: Effects, joining: Option<Arc<Session>>, sender: Option<u64>) {
        // Held staff events go out before anything else this room delivers, so that every member
        // still sees the room's events in the room's order.
        let only_staff_events = fx.message.is_none()
            && fx.left.is_empty()
            && fx
                .events
                .iter()
                .all(|o| matches!(o.to, Audience::StaffExcept(_)));
        if !only_staff_events {
            self.flush_staff_batch();
        }
        let room_id = self.room.id();
        let shared = &self.shared;
        // This node's deliveries, in order (see `fan`).
        let mut ops = FanOps::default();
        if let Some(session) = joining {
            if !fx.joined.is_empty() {
                let from = self.copy_from();
                let reservation = self.joining_reservation.as_mut();
                let entered = session.entered(room_id, from, reservation);
                session.confirm_room_mark(room_id, self.mark);
                if let Some(since) = entered {
                    // Away since before it entered: its grace period here starts now.
                    self.joined_offline = Some((session.user().clone(), since.max(self.now())));
                }
                ops.push(FanOp::Add(session.clone()));
            }
        }
        // Cluster mode: what the members on other nodes get, in the room's order.
        let remote_on = self.has_remote();
        let mut out_remote: Vec<crate::remote::Delivery> = Vec::new();
        let remote_staff = self.remote_staff();
        let mut gone = HashMap::with_capacity(fx.left.len());
        let mut left_remote = Vec::new();
        for user in fx.left {
            if !self.expiring {
                self.lapsed.remove(&user);
            }
            if self.remote.remove(&user).is_some() {
                self.remote_copies.remove(&user);
                left_remote.push(user.clone());
            }
            if let Some(session) = shared.session_of(&user).filter(|s| s.is_in(room_id)) {
                session.exited(room_id);
                ops.push(FanOp::Remove(session.clone()));
                gone.insert(user, session);
            }
        }
        if !left_remote.is_empty() {
            out_remote.push(crate::remote::Delivery::Left {
                users: left_remote,
                node: None,
            });
        }
        // (A user whose membership is on another node may have a session here that is not in
        // the room: that one is not a member's.)
        let remote_members = &self.remote;
        let member = |user: &UserId| {
            gone.get(user).cloned().or_else(|| {
                shared
                    .session_of(user)
                    .filter(|s| !remote_members.contains_key(user) || s.is_in(room_id))
            })
        };
        for out in fx.events {
            if remote_on {
                use crate::remote::{Delivery, Item};
                let item = Item::Event(out.event.clone());
                out_remote.push(match &out.to {
                    Audience::Members => Delivery::Broadcast {
                        item,
                        except: Vec::new(),
                    },
                    Audience::MembersExcept(users) => Delivery::Broadcast {
                        item,
                        except: users.clone(),
                    },
                    Audience::StaffExcept(users) => Delivery::To {
                        users: remote_staff
                            .iter()
                            .filter(|s| !users.contains(s))
                            .cloned()
                            .collect(),
                        node: None,
                        items: vec![item],
                    },
                    Audience::Users(users) => Delivery::To {
                        users: users.clone(),
                        node: None,
                        items: vec![item],
                    },
                    Audience::MembersAmong(users) => Delivery::To {
                        users: users
                            .iter()
                            .filter(|u| self.room.is_member(u) || !self.remote.contains_key(*u))
                            .cloned()
                            .collect(),
                        node: None,
                        items: vec![item],
                    },
                });
            }
            let item = ClientEvent::Room(Arc::new(out.event));
            match out.to {
                Audience::Members => ops.push(FanOp::Broadcast(item, Except::NONE)),
                Audience::MembersExcept(users) => {
                    debug_assert!(users.len() <= 2, "a broadcast skips at most two members");
                    let ids = users
                        .iter()
                        .filter_map(|u| member(u).map(|m| m.mailbox().id()));
                    ops.push(FanOp::Broadcast(item, Except::of(ids)));
                }
                Audience::StaffExcept(users) => {
                    self.staff_batch.push((item, users));
                }
                Audience::Users(users) => {
                    for user in users {
                        if let Some(m) = member(&user) {
                            ops.push(FanOp::SendTo(m, vec![item.clone()]));
                        }
                    }
                }
                Audience::MembersAmong(users) => {
                    for user in users {
                        // A member this command removed still hears what it says before the
                        // removal (a kicked admin hears it was demoted, then removed).
                        if self.room.is_member(&user) || gone.contains_key(&user) {
                            if let Some(m) = member(&user) {
                                ops.push(FanOp::SendTo(m, vec![item.clone()]));
                            }
                        }
                    }
                }
            }
        }
        if let Some((seq, recall)) = &fx.recalled {
            // Replay on join shows it recalled too.
            self.recent.recall(*seq, recall);
            // A message deleted before the members who are not staff received it never
            // reaches them.
            self.held.retain(|(m, _)| m.seq() != *seq);
            self.held_skip_users.remove(seq);
            self.recent
                .set_floor(self.held.front().map(|(m, _)| m.seq()));
        }
        // What waited only behind a message just deleted goes at the end.
        let release = fx.recalled.is_some();
        if let Some(message) = fx.message {
            if message.is_held() && !message.is_shadowed() && self.held.is_empty() {
                // Its replay floor first, so that pushing it keeps what comes before.
                self.recent.set_floor(Some(message.seq()));
            }
            self.recent.push(message.clone());
            if !message.is_shadowed() && (message.is_held() || !self.held.is_empty()) {
                // Held for review, or behind a held message: the staff in the room (but its
                // sender) have it at once, marked if it is held; the others when it is released,
                // in the room's order.
                // Whoever got it now (staff then, even if no longer at its release) is skipped
                // then, and nobody else.
                let record = self.room.record();
                let mut got = Vec::new();
                for staff in std::iter::once(&record.owner).chain(&record.admins) {
                    if *staff != *message.from() && self.room.is_member(staff) {
                        if let Some(m) = shared.session_of(staff) {
                            got.push(m.mailbox().id());
                            ops.push(FanOp::SendTo(
                                m,
                                vec![ClientEvent::Message(message.clone())],
                            ));
                        }
                    }
                }
                let skip = Except::of(sender).and(got.into());
                if remote_on {
                    let mut skip_users = vec![message.from().clone()];
                    for staff in std::iter::once(&record.owner).chain(&record.admins) {
                        if *staff != *message.from() && self.room.is_member(staff) {
                            skip_users.push(staff.clone());
                        }
                    }
                    let to: Vec<UserId> = remote_staff
                        .iter()
                        .filter(|s| **s != *message.from())
                        .cloned()
                        .collect();
                    if !to.is_empty() {
                        out_remote.push(crate::remote::Delivery::To {
                            users: to,
                            node: None,
                            items: vec![crate::remote::Item::Message(message.clone())],
                        });
                    }
                    self.held_skip_users.insert(message.seq(), skip_users);
                }
                if self.held.is_empty() {
                    if let Some(at) = message.held_until() {
                        shared.timers.schedule(room_id, Timer::HoldRelease { at });
                    }
                }
                self.held.push_back((message, skip));
                self.recent
                    .set_floor(self.held.front().map(|(m, _)| m.seq()));
            } else if message.is_shadowed() {
                // Marked, to the owner and admins in the room only (its sender is not staff).
                let record = self.room.record();
                for staff in std::iter::once(&record.owner).chain(&record.admins) {
                    if self.room.is_member(staff) {
                        if let Some(m) = member(staff) {
                            ops.push(FanOp::SendTo(
                                m,
                                vec![ClientEvent::Message(message.clone())],
                            ));
                        }
                    }
                }
                if remote_on && !remote_staff.is_empty() {
                    out_remote.push(crate::remote::Delivery::To {
                        users: remote_staff.clone(),
                        node: None,
                        items: vec![crate::remote::Item::Message(message.clone())],
                    });
                }
            } else {
                if remote_on {
                    out_remote.push(crate::remote::Delivery::Broadcast {
                        item: crate::remote::Item::Message(message.clone()),
                        except: vec![message.from().clone()],
                    });
                }
                let except = Except::of(sender);
                ops.push(FanOp::Broadcast(ClientEvent::Message(message), except));
            }
        }
        for (user, kind) in &fx.cancelled {
            shared.timers.cancel(room_id, user, *kind);
        }
        for timer in fx.timers {
            shared.timers.schedule(room_id, timer);
        }
        if fx.destroyed {
            shared.timers.cancel_room(room_id);
            ops.push(FanOp::DropRoom);
            if remote_on {
                out_remote.push(crate::remote::Delivery::Destroyed);
            }
        }
        if !out_remote.is_empty() {
            #[cfg(feature = "cluster")]
            if let Some(node) = self.shared.node() {
                for delivery in &out_remote {
                    node.publish(room_id, delivery);
                }
            }
        }
        self.fan_all(ops);
        if self.staff_batch.len() >= STAFF_BATCH_MAX {
            self.flush_staff_batch();
        }
        self.entry.set_member_count(self.room.member_count());
        if release
            && self
                .held
                .front()
                .is_some_and(|(m, _)| !m.is_held_at(self.now()))
        {
            self.release_held();
        }
    }

    /// Delivers to the members who are not staff the held messages whose hold has passed (engine
    /// clock), and the messages behind them up to the next one still held, in the room's order
    /// (one broadcast each, skipping the sender and the staff who got it at once); then sets the
    /// room's timer for the next release.
    fn release_held(&mut self) {
        let now = self.now();
        let room_id = self.room.id();
        while let Some((front, _)) = self.held.front() {
            if front.is_held_at(now) {
                break;
            }
            let Some((message, skip)) = self.held.pop_front() else {
                break;
            };
            // Members on other nodes: all but its sender and the staff who had it at once.
            let except = self
                .held_skip_users
                .remove(&message.seq())
                .unwrap_or_else(|| vec![message.from().clone()]);
            let released = message.released();
            self.publish(|| crate::remote::Delivery::Broadcast {
                item: crate::remote::Item::Message(released),
                except,
            });
            self.fan(FanOp::Broadcast(
                ClientEvent::Message(message.released()),
                skip,
            ));
        }
        if let Some(at) = self.held.front().and_then(|(m, _)| m.held_until()) {
            self.shared
                .timers
                .schedule(room_id, Timer::HoldRelease { at });
        }
        self.recent
            .set_floor(self.held.front().map(|(m, _)| m.seq()));
    }

    /// Sends the held staff events: to each owner or admin in the room, in one delivery, those
    /// that do not skip it.
    fn flush_staff_batch(&mut self) {
        if self.staff_batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.staff_batch);
        let record = self.room.record();
        let mut ops = FanOps::default();
        for staff in std::iter::once(&record.owner).chain(&record.admins) {
            if !self.room.is_member(staff) {
                continue;
            }
            let Some(session) = self.shared.session_of(staff) else {
                continue;
            };
            let items: Arc<[ClientEvent]> = batch
                .iter()
                .filter(|(_, except)| !except.contains(staff))
                .map(|(item, _)| item.clone())
                .collect();
            ops.push(FanOp::SendBatch(session, items));
        }
        self.fan_all(ops);
    }

    /// Applies a presence change or check; these have no caller to answer.
    fn presence(&mut self, command: Command, ctx: &mut Context<Self>) {
        if let Err(e) = self.execute(command, None, ctx) {
            tracing::warn!(room = %self.room.id(), error = %e, "presence update failed");
        }
    }

    fn join(
        &mut self,
        session: Arc<Session>,
        reservation: Option<RoomReservation>,
        attach: bool,
        seen_through: Option<u64>,
        ctx: &mut Context<Self>,
    ) -> Result<(ChatRoom, Option<Commit>), ChatError> {
        let user = session.user().clone();
        if attach && !self.room.is_member(&user) {
            return Err(ChatError::NotJoined(user.to_string()));
        }
        let joiner = session.clone();
        // Becomes the room in the session as it enters (see `deliver`), or is released if the
        // room refuses.
        self.joining_reservation = reservation;
        let executed = self.execute(
            Command::Join {
                user: user.clone(),
                now: self.now(),
            },
            Some(session),
            ctx,
        );
        self.joining_reservation = None;
        let commit = match executed {
            // Cluster mode: a member through a session on another node; this node's session
            // gets the room's deliveries too.
            Err(ChatError::AlreadyJoined)
                if self.remote.contains_key(&user) && !joiner.is_in(self.room.id()) =>
            {
                let from = self.room.last_seq() + 1;
                let room_id = self.room.id();
                joiner.entered(room_id, from, None);
                joiner.confirm_room_mark(room_id, self.mark);
                // What a joiner gets first: the newest messages.
                let replay = self.replay_for(&user);
                self.fan(FanOp::SendTo(
                    joiner.clone(),
                    replay.into_iter().map(ClientEvent::Message).collect(),
                ));
                self.fan(FanOp::Add(joiner.clone()));
                return Err(ChatError::AlreadyJoined);
            }
            other => other?,
        };
        let staff = self.room.is_staff(&user);
        let recent: Vec<ClientEvent> = self
            .replay_for(&user)
            .into_iter()
            .filter(|m| seen_through.is_none_or(|s| m.seq() > s))
            .map(ClientEvent::Message)
            .collect();
        if staff && !self.held.is_empty() {
            // A staff member who joins during a hold had the held messages in its replay: their
            // release skips it.
            let mailbox = joiner.mailbox().id();
            for (message, skip) in self.held.iter_mut() {
                let replayed = recent
                    .iter()
                    .any(|e| matches!(e, ClientEvent::Message(m) if m.seq() == message.seq()));
                if replayed && !skip.contains(mailbox) {
                    *skip = std::mem::take(skip).also(mailbox);
                }
            }
        }
        if let Some(seen) = seen_through {
            // Fed up to `seen` by the previous owner, it missed what came between (the room
            // changed owners during its join): told so, as the other members were, to fetch
            // it from history.
            let first = recent.iter().find_map(|e| match e {
                ClientEvent::Message(m) => Some(m.seq()),
                _ => None,
            });
            if self.room.last_seq() > seen && first.is_none_or(|f| f > seen + 1) {
                let event = ChatRoomEvent::ChatRoomRecovered {
                    room_id: self.room.id(),
                    last_seq: self.room.last_seq(),
                };
                self.fan(FanOp::SendTo(
                    joiner.clone(),
                    vec![ClientEvent::Room(Arc::new(event))],
                ));
            }
        }
        self.fan(FanOp::SendTo(joiner, recent));
        // The session was offline when it entered (a user joining without a live client): it
        // starts its grace period now. Later changes reach the room as `PresenceChanged`.
        if let Some((offline, since)) = self.joined_offline.take() {
            self.presence(
                Command::SetPresence {
                    user: offline,
                    online: false,
                    now: since,
                },
                ctx,
            );
        }
        Ok((self.room.snapshot(Some(&user)), commit))
    }

    /// The join replay of `user`: the room's newest messages it may see (up to the room's
    /// replay count), stopping before the first one still held for review if it is not staff
    /// (what the members who are not staff have not received yet comes with its release).
    fn replay_for(&self, user: &UserId) -> Vec<ChatMessage> {
        let staff = self.room.is_staff(user);
        let cut = match self.held.front() {
            Some((m, _)) if !staff => m.seq(),
            _ => u64::MAX,
        };
        self.recent.newest_seen_by(
            self.room.limits().join_replay_count,
            user,
            staff,
            self.now(),
            cut,
        )
    }

    /// Runs a call, catching a panic (see [`RoomActor::guarded`]), and answers its value with
    /// the commit to await: the call's own, or one that covers every write made so far (a call
    /// that found its change already made, or a read, must not report state a crash can still
    /// take back; free when nothing waits to be flushed).
    fn answer_with<T>(
        &mut self,
        ctx: &mut Context<Self>,
        f: impl FnOnce(&mut Self, &mut Context<Self>) -> Result<(T, Option<Commit>), ChatError>,
    ) -> Result<Answer<T>, ChatError> {
        let room = self.room.id();
        // A freeze, block or mute whose end has passed is lifted before the call, with its event
        // and audit entry: nothing the call does (a viewer's message, a join's answer, an
        // unblock) comes before it, even if the timer has not fired yet or was missed (a room
        // just loaded, a clock that jumped).
        let now = self.now();
        for due in self.room.due_expiries(now) {
            self.presence(due, ctx);
        }
        // Likewise, held messages whose hold has passed go out before the call.
        if self.held.front().is_some_and(|(m, _)| !m.is_held_at(now)) {
            self.release_held();
        }
        match self.guarded(ctx, f) {
            Some(Ok((value, commit))) => Ok(Answer {
                value,
                durable: commit.unwrap_or_else(|| self.store.commit()),
            }),
            Some(Err(e)) => Err(e),
            None => Err(ChatError::RoomUnavailable(format!(
                "room {room} failed on this call and is restarting"
            ))),
        }
    }
}

impl Actor for RoomActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.me = Some(ctx.address().downgrade());
        let room_id = self.room.id();
        // Cluster mode: only the lease holder runs the room (a call that routed here just
        // before the lease was lost must not start it after).
        #[cfg(feature = "cluster")]
        if let Some(node) = self.shared.node() {
            if !node.owns(room_id) {
                self.initial.clear();
                ctx.stop();
                node.started_without_lease(room_id);
                return;
            }
        }
        let initial = std::mem::take(&mut self.initial);
        let from = self.room.last_seq() + 1;
        // Members added at creation without a client are offline from the room's creation; a
        // restarted room's members offline since before it restarted, from when they left.
        let mut offline = Vec::new();
        let mut reservations = std::mem::take(&mut self.initial_reservations);
        for session in &initial {
            let reservation = reservations
                .iter_mut()
                .find(|r| Arc::ptr_eq(r.session(), session));
            let entered = session.entered(room_id, from, reservation);
            session.confirm_room_mark(room_id, self.mark);
            if let Some(since) = entered {
                // A member of a room that restarted or woke has been away since it went, not
                // since the actor started (a new room's initial members: since its start).
                let since = if self.recovered || self.woke {
                    since.max(self.room.record().created_at)
                } else {
                    since.max(self.started_at)
                };
                offline.push((session.user().clone(), since));
            }
            self.fan(FanOp::Add(session.clone()));
        }
        for (user, since) in offline {
            self.presence(
                Command::SetPresence {
                    user,
                    online: false,
                    now: since,
                },
                ctx,
            );
        }
        // Mutes that end later (of a room loaded from the store) get their timers again; those
        // that ended while the room was not running are lifted at once.
        let mutes: Vec<Timer> = self
            .room
            .record()
            .mute_list
            .iter()
            .filter(|(_, &at)| at >= 0)
            .map(|(user, &at)| Timer::MuteExpiry {
                user: user.clone(),
                at,
            })
            .collect();
        for timer in mutes {
            self.shared.timers.schedule(room_id, timer);
        }
        // A timed freeze ends on its own (at once if it ended while the room was not running).
        if let Some(at) = self.room.record().live.frozen_until {
            if at != roomcast_model::UNTIL_LIFTED {
                self.shared
                    .timers
                    .schedule(room_id, Timer::FreezeEnd { at });
            }
        }
        // Timed blocks likewise.
        let blocks: Vec<Timer> = self
            .room
            .record()
            .live
            .block_until
            .iter()
            .map(|(user, &at)| Timer::BlockEnd {
                user: user.clone(),
                at,
            })
            .collect();
        for timer in blocks {
            self.shared.timers.schedule(room_id, timer);
        }
        if self.recovered {
            // The previous actor died: tell the members (restored from their sessions) where the
            // room's messages stand, so they can fetch what they may have missed.
            let event = ChatRoomEvent::ChatRoomRecovered {
                room_id,
                last_seq: self.room.last_seq(),
            };
            self.fan(FanOp::Broadcast(
                ClientEvent::Room(Arc::new(event)),
                Except::NONE,
            ));
        }
        self.entry.set_member_count(self.room.member_count());
        tracing::debug!(room = %room_id, "room actor started");
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.exit.clean = !self.poisoned;
        // What this node's members were still to get (a destroyed room's last events): it goes
        // once the log holds it, or never if the log refused it.
        #[cfg(feature = "cluster")]
        if let (Some(node), Some((last, _))) = (self.shared.node(), self.deferred.back()) {
            let (last, room) = (*last, self.room.id());
            let ops = std::mem::take(&mut self.deferred);
            let mut shards = std::mem::replace(&mut self.shards, self.shared.fanout.room_shards());
            let fanout = self.shared.fanout.clone();
            node.when_logged(
                room,
                last,
                Box::new(move |ok| {
                    if ok {
                        for (_, op) in ops {
                            op.apply(&fanout, room, &mut shards);
                        }
                    }
                }),
            );
        }
    }
}

/// One step of delivering to this node's members (see [`RoomActor::fan`]).
pub(crate) enum FanOp {
    Add(Arc<Session>),
    Remove(Arc<Session>),
    Broadcast(ClientEvent, Except),
    SendTo(Arc<Session>, Vec<ClientEvent>),
    SendBatch(Arc<Session>, Arc<[ClientEvent]>),
    DropRoom,
}

impl FanOp {
    fn apply(
        self,
        fanout: &crate::fanout::Fanout,
        room: RoomId,
        shards: &mut crate::fanout::RoomShards,
    ) {
        match self {
            FanOp::Add(member) => fanout.add(room, member, shards),
            FanOp::Remove(member) => fanout.remove(room, &member, shards),
            FanOp::Broadcast(item, except) => fanout.broadcast(room, item, except, shards),
            FanOp::SendTo(member, items) => fanout.send_to(member, items),
            FanOp::SendBatch(member, items) => fanout.send_batch_to(member, items),
            FanOp::DropRoom => fanout.drop_room(room),
        }
    }
}

/// Cluster mode: the room's log holds what some deferred deliveries were waiting for.
#[derive(Message)]
#[rtype(result = "()")]
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
struct Logged;

impl Handler<Logged> for RoomActor {
    type Result = ();

    fn handle(&mut self, _: Logged, _: &mut Context<Self>) {
        self.flush_deferred();
    }
}

impl RoomActor {
    /// Delivers to this node's members. On one node at once; in cluster mode once the room's
    /// log holds every write this room made before (so that no member here sees what a next
    /// owner would not find in the log: a message whose append failed is never shown), in
    /// the order the room made them.
    fn fan(&mut self, op: FanOp) {
        #[cfg(feature = "cluster")]
        if let Some(node) = self.shared.node() {
            let room = self.room.id();
            let (queued, done) = node.log_progress(room);
            if !self.deferred.is_empty() || done.is_none_or(|d| d < queued) {
                let first = self.deferred.is_empty();
                self.deferred.push_back((queued, op));
                if first {
                    self.wake_when_logged(queued);
                }
                return;
            }
        }
        let room = self.room.id();
        op.apply(&self.shared.fanout, room, &mut self.shards);
    }

    /// Each of `ops`, in order (see [`RoomActor::fan`]).
    fn fan_all(&mut self, ops: FanOps) {
        for op in ops {
            self.fan(op);
        }
    }

    /// Cluster mode: asks the log for a wake-up once it holds `watermark` appends.
    #[cfg_attr(not(feature = "cluster"), allow(unused_variables, dead_code))]
    fn wake_when_logged(&self, watermark: u64) {
        #[cfg(feature = "cluster")]
        if let (Some(node), Some(me)) = (self.shared.node(), self.me.clone()) {
            node.when_logged(
                self.room.id(),
                watermark,
                Box::new(move |ok| {
                    // If an append failed the room is given up: what waited is never shown.
                    if ok {
                        if let Some(me) = me.upgrade() {
                            me.do_send(Logged);
                        }
                    }
                }),
            );
        }
    }

    /// Delivers what the log now covers, and waits for the rest.
    fn flush_deferred(&mut self) {
        #[cfg(feature = "cluster")]
        if let Some(node) = self.shared.node() {
            let room = self.room.id();
            let Some(done) = node.log_progress(room).1 else {
                self.deferred.clear();
                return;
            };
            while self.deferred.front().is_some_and(|(w, _)| *w <= done) {
                if let Some((_, op)) = self.deferred.pop_front() {
                    op.apply(&self.shared.fanout, room, &mut self.shards);
                }
            }
            if let Some(&(next, _)) = self.deferred.front() {
                self.wake_when_logged(next);
            }
        }
    }
}

/// The fan-out steps of one command, in order: one without allocating (most commands).
#[derive(Default)]
pub(crate) struct FanOps {
    first: Option<FanOp>,
    rest: Vec<FanOp>,
}

impl FanOps {
    fn push(&mut self, op: FanOp) {
        if self.first.is_none() && self.rest.is_empty() {
            self.first = Some(op);
        } else {
            self.rest.push(op);
        }
    }
}

impl IntoIterator for FanOps {
    type Item = FanOp;
    type IntoIter = std::iter::Chain<std::option::IntoIter<FanOp>, std::vec::IntoIter<FanOp>>;

    fn into_iter(self) -> Self::IntoIter {
        self.first.into_iter().chain(self.rest)
    }
}

impl RoomActor {
    /// Runs `f`, catching a panic: the room's state can no longer be trusted, so the actor
    /// stops as failed and the supervisor restarts the room from the store. `None` if `f`
    /// panicked.
    fn guarded<R>(
        &mut self,
        ctx: &mut Context<Self>,
        f: impl FnOnce(&mut Self, &mut Context<Self>) -> R,
    ) -> Option<R> {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self, ctx))) {
            Ok(r) => Some(r),
            Err(_) => {
                tracing::error!(room = %self.room.id(), "room actor panicked; restarting it from the store");
                self.poisoned = true;
                ctx.stop();
                None
            }
        }
    }
}

impl Handler<Join> for RoomActor {
    type Result = Result<Answer<ChatRoom>, ChatError>;

    fn handle(&mut self, msg: Join, ctx: &mut Context<Self>) -> Self::Result {
        self.answer_with(ctx, |act, ctx| {
            act.join(
                msg.session,
                msg.reservation,
                msg.attach,
                msg.seen_through,
                ctx,
            )
        })
    }
}

impl Handler<JoinRemote> for RoomActor {
    type Result = Result<Answer<(ChatRoom, u64, (u64, u64))>, ChatError>;

    fn handle(&mut self, msg: JoinRemote, ctx: &mut Context<Self>) -> Self::Result {
        self.last_heard
            .insert(msg.node.clone(), std::time::Instant::now());
        self.answer_with(ctx, |act, ctx| {
            let user = msg.user;
            if msg.attach && !act.room.is_member(&user) {
                return Err(ChatError::NotJoined(user.to_string()));
            }
            act.remote_joining = Some((user.clone(), msg.keeps_copy));
            // Registered before the command, so that what it delivers reaches the new member's
            // node too (its join event included).
            let was = act
                .remote
                .entry(user.clone())
                .or_default()
                .insert(msg.node.clone(), msg.offline_since);
            let executed = act.execute(
                Command::Join {
                    user: user.clone(),
                    now: act.now(),
                },
                None,
                ctx,
            );
            act.remote_joining = None;
            let commit = match executed {
                Ok(commit) => commit,
                // A member already (through another session of its user): this node's session
                // gets the room's deliveries too.
                Err(ChatError::AlreadyJoined) => {
                    // A session new to the room on that node gets the join replay.
                    act.publish_joined(&user, &msg.node, was.is_none());
                    // Back online through this session, if it is.
                    if act.presence_of(&user).is_none() {
                        let now = act.now();
                        act.presence(
                            Command::SetPresence {
                                user: user.clone(),
                                online: true,
                                now,
                            },
                            ctx,
                        );
                    }
                    return Err(ChatError::AlreadyJoined);
                }
                Err(e) => {
                    // Refused: as it was.
                    if let Some(nodes) = act.remote.get_mut(&user) {
                        match was {
                            Some(state) => {
                                nodes.insert(msg.node.clone(), state);
                            }
                            None => {
                                nodes.remove(&msg.node);
                            }
                        }
                        if nodes.is_empty() {
                            act.remote.remove(&user);
                        }
                    }
                    return Err(e);
                }
            };
            let from = act.copy_from();
            act.remote_copies
                .entry(user.clone())
                .or_insert((msg.keeps_copy, from));
            act.publish_joined(&user, &msg.node, true);
            if let Some(since) = msg.offline_since {
                act.presence(
                    Command::SetPresence {
                        user: user.clone(),
                        online: false,
                        now: since,
                    },
                    ctx,
                );
            }
            act.entry.set_member_count(act.room.member_count());
            Ok(((act.room.snapshot(Some(&user)), from, act.mark), commit))
        })
    }
}

impl Handler<RemotePresence> for RoomActor {
    type Result = ();

    fn handle(&mut self, msg: RemotePresence, ctx: &mut Context<Self>) {
        self.last_heard
            .insert(msg.node.clone(), std::time::Instant::now());
        let Some(nodes) = self.remote.get_mut(&msg.user) else {
            return;
        };
        if !nodes.contains_key(&msg.node) {
            return;
        }
        nodes.insert(msg.node, msg.offline_since);
        let since = self.presence_of(&msg.user);
        let command = Command::SetPresence {
            user: msg.user,
            online: since.is_none(),
            now: since.unwrap_or_else(|| self.now()),
        };
        self.guarded(ctx, |act, ctx| act.presence(command, ctx));
    }
}

impl Handler<Rejoin> for RoomActor {
    type Result = ();

    fn handle(&mut self, msg: Rejoin, ctx: &mut Context<Self>) {
        self.last_heard
            .insert(msg.node.clone(), std::time::Instant::now());
        self.guarded(ctx, |act, ctx| {
            let mut back = Vec::new();
            // Not members any more: their node lets them go, and those removed while their node
            // was away are told why, as a member back online is on one node.
            let (mut out, mut told) = (Vec::new(), Vec::new());
            for crate::remote::RejoiningMember {
                user,
                offline_since,
                mark,
                copy: (copy_from, keeps_copy),
            } in msg.members
            {
                if !act.room.is_member(&user) {
                    let lapsed = act.lapsed.remove(&user);
                    // Departed since the room last confirmed it (its departure is in the
                    // room's log, whoever owned the room then).
                    let departed = act
                        .departed
                        .get(&user)
                        .filter(|d| mark.is_none_or(|m| d.mark > m));
                    // Not departed since (the room restarted, or changed owners, and lost
                    // track of it): in again, unless blocked or banned from rejoining.
                    if let Some(event) = kept_out(&act.room, &user, departed, lapsed, act.now()) {
                        if let Some(event) = event {
                            told.push((user.clone(), event));
                        }
                        out.push(user);
                        continue;
                    }
                    act.room.restore_member(user.clone());
                }
                act.lapsed.remove(&user);
                // Its copy as its node knows it (the owner that let it in opened it), so that
                // its leave here closes that copy, kept or deleted as the member asked.
                let from = copy_from.unwrap_or(act.room.last_seq() + 1);
                act.remote_copies
                    .entry(user.clone())
                    .or_insert((keeps_copy, from));
                act.remote
                    .entry(user.clone())
                    .or_default()
                    .insert(msg.node.clone(), offline_since);
                back.push(user);
            }
            if !out.is_empty() {
                for (user, event) in told {
                    act.publish_to_nodes(crate::remote::Delivery::To {
                        users: vec![user],
                        node: Some(msg.node.clone()),
                        items: vec![crate::remote::Item::Event(event)],
                    });
                }
                act.publish_to_nodes(crate::remote::Delivery::Left {
                    users: out,
                    node: Some(msg.node.clone()),
                });
            }
            if back.is_empty() {
                return;
            }
            let node = msg.node.clone();
            for user in &back {
                let (user, node) = (user.clone(), node.clone());
                let mark = act.mark;
                act.publish(|| crate::remote::Delivery::Joined { user, node, mark });
            }
            // They may have missed what the previous owner sent last: where the room stands.
            let event = ChatRoomEvent::ChatRoomRecovered {
                room_id: act.room.id(),
                last_seq: act.room.last_seq(),
            };
            let users = back.clone();
            act.publish(|| crate::remote::Delivery::To {
                users,
                node: Some(node),
                items: vec![crate::remote::Item::Event(event)],
            });
            for user in back {
                let since = act.presence_of(&user);
                let now = act.now();
                act.presence(
                    Command::SetPresence {
                        user,
                        online: since.is_none(),
                        now: since.unwrap_or(now),
                    },
                    ctx,
                );
            }
            act.entry.set_member_count(act.room.member_count());
        });
    }
}

impl Handler<NodeGone> for RoomActor {
    type Result = ();

    fn handle(&mut self, msg: NodeGone, ctx: &mut Context<Self>) {
        if self
            .last_heard
            .get(&msg.node)
            .is_some_and(|at| *at > msg.silent_since)
        {
            // It spoke since it went silent: back already.
            return;
        }
        let now = self.now();
        let mut affected = Vec::new();
        self.remote.retain(|user, nodes| {
            if let Some(state) = nodes.remove(&msg.node) {
                affected.push((user.clone(), state));
            }
            !nodes.is_empty()
        });
        for (user, there) in affected {
            if !self.room.is_member(&user) {
                continue;
            }
            if !self.remote.contains_key(&user) {
                self.lapsed.insert(user.clone());
            }
            // Offline since its last session went: its sessions elsewhere, and the one on the
            // gone node as that node last told (online until now), whichever went last.
            let since = self
                .presence_of(&user)
                .map(|elsewhere| elsewhere.max(there.unwrap_or(now)));
            let command = Command::SetPresence {
                user,
                online: since.is_none(),
                now: since.map_or(now, |s| s.min(now)),
            };
            self.guarded(ctx, |act, ctx| act.presence(command, ctx));
        }
    }
}

impl Handler<Evict> for RoomActor {
    type Result = ();

    fn handle(&mut self, _: Evict, ctx: &mut Context<Self>) {
        tracing::info!(room = %self.room.id(), "the room moved to another node; its actor stops here");
        // What waited for the log is not this node's to deliver any more.
        self.deferred.clear();
        self.shared.fanout.drop_room(self.room.id());
        ctx.stop();
    }
}

impl Handler<Leave> for RoomActor {
    type Result = Result<Answer<()>, ChatError>;

    fn handle(&mut self, msg: Leave, ctx: &mut Context<Self>) -> Self::Result {
        self.answer_with(ctx, |act, ctx| {
            let command = Command::Leave {
                user: msg.user,
                owner_may_leave: msg.owner_may_leave,
            };
            Ok(((), act.execute(command, None, ctx)?))
        })
    }
}

impl Handler<Destroy> for RoomActor {
    type Result = Result<Answer<()>, ChatError>;

    fn handle(&mut self, msg: Destroy, ctx: &mut Context<Self>) -> Self::Result {
        self.answer_with(ctx, |act, ctx| {
            let commit = act.execute(Command::Destroy { user: msg.user }, None, ctx)?;
            act.shared.directory.mark_destroyed(&act.entry);
            ctx.stop();
            Ok(((), commit))
        })
    }
}

impl Handler<Info> for RoomActor {
    type Result = Result<Answer<ChatRoom>, ChatError>;

    fn handle(&mut self, msg: Info, ctx: &mut Context<Self>) -> Self::Result {
        self.answer_with(ctx, |act, _| {
            Ok((act.room.snapshot(Some(&msg.viewer)), None))
        })
    }
}

impl Handler<SendMessage> for RoomActor {
    type Result = Result<Answer<Sent>, ChatError>;

    fn handle(&mut self, msg: SendMessage, ctx: &mut Context<Self>) -> Self::Result {
        self.answer_with(ctx, |act, ctx| {
            let now = act.now();
            let key = msg.message.idempotency_key.clone();
            if let Some(key) = &key {
                // A repeat within the window: the first answer, nothing sent again. Its
                // durability is the first's write's (the answer's commit covers it).
                if let Some(seen) = act.keys.get(&msg.from, key, now) {
                    return Ok((act.earlier(seen.record.clone(), seen.message.clone()), None));
                }
            }
            let command = Command::SendMessage {
                from: msg.from,
                message: msg.message,
                msg_id: msg.msg_id,
                now,
            };
            act.sending_key = key.clone();
            let executed = act.execute_full(command, None, msg.except, ctx);
            act.sending_key = None;
            let (commit, _, sent) = executed?;
            let sent =
                sent.ok_or_else(|| ChatError::General("the room accepted no message".into()))?;
            if let Some(key) = key {
                let record = IdempotencyRecord {
                    room: sent.room_id(),
                    from: sent.from().clone(),
                    key,
                    msg_id: sent.msg_id(),
                    seq: sent.seq(),
                    at: sent.server_time(),
                };
                act.keys.insert(record, Some(sent.clone()));
            }
            Ok((Sent::Message(sent), commit))
        })
    }
}

impl RoomActor {
    /// The message an earlier send with the same key got: kept by this actor, among the newest
    /// messages, or read from the store (queued after the room's writes).
    fn earlier(&self, record: IdempotencyRecord, message: Option<ChatMessage>) -> Sent {
        if let Some(message) = message {
            return Sent::Message(message);
        }
        let seq = record.seq;
        let recent = self.recent.newest(usize::MAX);
        if let Some(message) = recent.into_iter().find(|m| m.seq() == seq) {
            return Sent::Message(message);
        }
        let room = self.room.id();
        let read = self.store.read(move |reader| {
            use std::ops::Bound::Included;
            let found = reader.messages(room, (Included(seq), Included(seq)), false, 1)?;
            Ok(found.into_iter().next())
        });
        Sent::Stored { record, read }
    }
}

impl Handler<Broadcast> for RoomActor {
    type Result = Result<Answer<ChatMessage>, ChatError>;

    fn handle(&mut self, msg: Broadcast, ctx: &mut Context<Self>) -> Self::Result {
        self.answer_with(ctx, |act, ctx| {
            let command = Command::Broadcast {
                from: msg.from,
                message: msg.message,
                msg_id: msg.msg_id,
                now: act.now(),
            };
            let (commit, _, sent) = act.execute_full(command, None, msg.except, ctx)?;
            let sent =
                sent.ok_or_else(|| ChatError::General("the room accepted no message".into()))?;
            Ok((sent, commit))
        })
    }
}

impl Handler<FetchHistory> for RoomActor {
    type Result = Result<Answer<StoreRead<ChatCursorResult<ChatMessage>>>, ChatError>;

    fn handle(&mut self, msg: FetchHistory, ctx: &mut Context<Self>) -> Self::Result {
        self.answer_with(ctx, |act, _| {
            if !act.room.is_member(&msg.viewer) {
                return Err(ChatError::NotJoined(msg.viewer.to_string()));
            }
            let room = act.room.id();
            let query = msg.query;
            let staff = act.room.is_staff(&msg.viewer);
            let viewer = msg.viewer;
            let now = act.now();
            // Queued after this room's writes: the page shows every message sent before it.
            let page = act.store.read(move |reader| {
                history_page(reader, room, query, |m| m.seen_by(&viewer, staff, now))
            });
            Ok((page, None))
        })
    }
}

impl Handler<ReadMessage> for RoomActor {
    type Result = Result<Answer<StoreRead<Option<MessageData>>>, ChatError>;

    fn handle(&mut self, msg: ReadMessage, ctx: &mut Context<Self>) -> Self::Result {
        self.answer_with(ctx, |act, _| {
            let staff = matches!(
                act.room.role_of(&msg.viewer),
                roomcast_model::ChatRoomPermissionType::Owner
                    | roomcast_model::ChatRoomPermissionType::Admin
            );
            if !staff && !act.room.is_member(&msg.viewer) {
                return Err(ChatError::NotJoined(msg.viewer.to_string()));
            }
            let room = act.room.id();
            let seq = msg.seq;
            // A message still waiting for its release is the room's to delete, even once
            // retention dropped it from the store.
            let waiting = act
                .held
                .iter()
                .find(|(m, _)| m.seq() == seq)
                .map(|(m, _)| m.data().clone());
            if let Some(data) = waiting {
                return Ok((act.store.read(move |_| Ok(Some(data))), None));
            }
            // Queued after this room's writes: it sees every message sent before it.
            let read = act.store.read(move |reader| {
                use std::ops::Bound::Included;
                let found = reader.messages(room, (Included(seq), Included(seq)), false, 1)?;
                Ok(found.into_iter().next())
            });
            Ok((read, None))
        })
    }
}

impl Handler<FetchAuditLog> for RoomActor {
    type Result = Result<Answer<StoreRead<ChatCursorResult<AuditEntry>>>, ChatError>;

    fn handle(&mut self, msg: FetchAuditLog, ctx: &mut Context<Self>) -> Self::Result {
        self.answer_with(ctx, |act, _| {
            let role = act.room.role_of(&msg.viewer);
            roomcast_model::check_permission(roomcast_model::Operation::FetchAuditLog, role, None)?;
            let room = act.room.id();
            let (before, size) = (msg.before, msg.page_size as usize);
            // Queued after this room's writes: the page shows every act before it.
            let page = act.store.read(move |reader| {
                let data = reader.audit_log(room, before, size)?;
                let cursor = match data.last() {
                    Some(oldest) if data.len() == size && oldest.seq > 1 => Some(oldest.seq),
                    _ => None,
                };
                Ok(ChatCursorResult { data, cursor })
            });
            Ok((page, None))
        })
    }
}

impl Handler<Hibernate> for RoomActor {
    type Result = ();

    fn handle(&mut self, msg: Hibernate, ctx: &mut Context<Self>) {
        // A room with messages still held for review stays until they are out. Cluster mode:
        // one with members on other nodes stays too (a restarted room knows only this node's
        // sessions, and would not hear from theirs).
        if !self.room.is_dormant()
            || !self.staff_batch.is_empty()
            || !self.held.is_empty()
            || self.poisoned
            || !self.remote.is_empty()
            || !self.deferred.is_empty()
        {
            return;
        }
        let now = self.now();
        if !self.room.windows_ended(now) {
            // A member's message window outlives its membership: it is not dropped early.
            return;
        }
        if self
            .entry
            .hibernate(self.exit.generation, msg.idle_before, self.room.members())
        {
            // No call holds the room and none can reach this actor any more: the next call
            // loads the room again, its members (offline and exempt) coming back from their
            // sessions in the order they joined. The shards keep the room's members (and so
            // their sessions, which a sleeping room does not hold) until then.
            tracing::debug!(room = %self.room.id(), "room hibernates");
            ctx.stop();
        }
    }
}

impl Handler<Stats> for RoomActor {
    type Result = Result<Answer<StoreRead<RoomStats>>, ChatError>;

    fn handle(&mut self, _: Stats, ctx: &mut Context<Self>) -> Self::Result {
        self.answer_with(ctx, |act, _| {
            let room = act.room.id();
            let online_count = act
                .room
                .members()
                .iter()
                .filter(|u| {
                    act.shared
                        .session_of(u)
                        .is_some_and(|s| s.is_online() && s.is_in(room))
                        || act.online_elsewhere(u)
                })
                .count();
            let stats = RoomStats {
                room_id: room,
                member_count: act.room.member_count(),
                online_count,
                last_seq: act.room.last_seq(),
                retained: 0,
                messages: act.room.stats(),
            };
            let read = act.store.read(move |reader| {
                let bounds = reader.message_bounds(room)?;
                Ok(RoomStats {
                    retained: bounds.map_or(0, |(first, last)| (last + 1 - first) as usize),
                    ..stats
                })
            });
            Ok((read, None))
        })
    }
}

impl Handler<Apply> for RoomActor {
    type Result = Result<Answer<AttributeFailures>, ChatError>;

    fn handle(&mut self, Apply(command): Apply, ctx: &mut Context<Self>) -> Self::Result {
        self.answer_with(ctx, |act, ctx| {
            // A message the members who are not staff have not received yet (held for review,
            // or waiting behind one) cannot be pinned: the pin would reach them first.
            if let Command::Moderate {
                action: roomcast_model::Moderation::PinMessage(m),
                ..
            } = &command
            {
                if act.held.front().is_some_and(|(h, _)| m.seq >= h.seq()) {
                    return Err(ChatError::MessageInvalid(format!(
                        "message {} has not reached every member yet (held for review)",
                        m.seq
                    )));
                }
            }
            let (commit, failures) = act.execute_with_failures(command, None, ctx)?;
            Ok((failures, commit))
        })
    }
}

impl Handler<Query> for RoomActor {
    type Result = Result<Answer<QueryAnswer>, ChatError>;

    fn handle(&mut self, msg: Query, ctx: &mut Context<Self>) -> Self::Result {
        self.answer_with(ctx, |act, _| {
            Ok((act.answer(&msg.viewer, msg.query)?, None))
        })
    }
}

#[cfg(feature = "fault-injection")]
impl Handler<Panic> for RoomActor {
    type Result = Result<Answer<()>, ChatError>;

    fn handle(&mut self, _: Panic, ctx: &mut Context<Self>) -> Self::Result {
        self.answer_with(ctx, |act, _| -> Result<((), Option<Commit>), ChatError> {
            panic!("injected fault in room {}", act.room.id())
        })
    }
}

impl Handler<WriteFailed> for RoomActor {
    type Result = ();

    fn handle(&mut self, _: WriteFailed, ctx: &mut Context<Self>) {
        tracing::error!(room = %self.room.id(), "a write of this room failed; restarting it from the store");
        self.poisoned = true;
        ctx.stop();
    }
}

impl Handler<PresenceChanged> for RoomActor {
    type Result = ();

    fn handle(&mut self, msg: PresenceChanged, ctx: &mut Context<Self>) {
        let Some(mut offline_since) = msg.session.take_room_notice(self.room.id()) else {
            return;
        };
        if self.remote.contains_key(msg.session.user()) {
            // Cluster mode: its sessions on other nodes count too.
            offline_since = self.presence_of(msg.session.user());
        }
        let command = Command::SetPresence {
            user: msg.session.user().clone(),
            online: offline_since.is_none(),
            now: offline_since.unwrap_or_else(|| self.now()),
        };
        self.guarded(ctx, |act, ctx| act.presence(command, ctx));
    }
}

impl Handler<ExpireMute> for RoomActor {
    type Result = ();

    fn handle(&mut self, msg: ExpireMute, ctx: &mut Context<Self>) {
        let now = self.now();
        let command = Command::ExpireMute {
            user: msg.user,
            now,
        };
        self.guarded(ctx, |act, ctx| act.presence(command, ctx));
    }
}

impl Handler<ExpireFreeze> for RoomActor {
    type Result = ();

    fn handle(&mut self, _: ExpireFreeze, ctx: &mut Context<Self>) {
        let command = Command::ExpireFreeze { now: self.now() };
        self.guarded(ctx, |act, ctx| act.presence(command, ctx));
    }
}

impl Handler<ReleaseHeld> for RoomActor {
    type Result = ();

    fn handle(&mut self, _: ReleaseHeld, _: &mut Context<Self>) {
        if !self.held.is_empty() {
            self.release_held();
        }
    }
}

impl Handler<ExpireBlock> for RoomActor {
    type Result = ();

    fn handle(&mut self, msg: ExpireBlock, ctx: &mut Context<Self>) {
        let command = Command::ExpireBlock {
            user: msg.user,
            now: self.now(),
        };
        self.guarded(ctx, |act, ctx| act.presence(command, ctx));
    }
}

impl Handler<ExpireOffline> for RoomActor {
    type Result = ();

    fn handle(&mut self, msg: ExpireOffline, ctx: &mut Context<Self>) {
        let now = self.now();
        // The session owns the presence; the room's view is a cache of it. A member whose
        // session is online now is never removed, whatever the room last heard.
        let online = self
            .shared
            .session_of(&msg.user)
            .is_some_and(|s| s.is_online() && s.is_in(self.room.id()))
            || self.online_elsewhere(&msg.user);
        let command = if online {
            Command::SetPresence {
                user: msg.user,
                online: true,
                now,
            }
        } else {
            Command::ExpireOffline {
                user: msg.user,
                now,
            }
        };
        self.expiring = true;
        self.guarded(ctx, |act, ctx| act.presence(command, ctx));
        self.expiring = false;
    }
}

/// A page of `room`'s retained history, read from the store (newest first up, oldest first
/// down). Runs on the store's thread.
///
/// `seen` is how the viewer sees each message (`None`: hidden from it, a shadowed message of
/// someone else): hidden messages are skipped, so a page holds `page_size` messages the viewer
/// sees whenever there are that many.
fn history_page(
    reader: &Reader,
    room: RoomId,
    q: HistoryQuery,
    seen: impl Fn(ChatMessage) -> Option<ChatMessage>,
) -> Result<ChatCursorResult<ChatMessage>, StoreError> {
    use std::ops::Bound::{Excluded, Unbounded};
    let (mut range, newest_first) = match (q.direction, q.start_seq) {
        (SearchDirection::Up, None) => ((Unbounded, Unbounded), true),
        (SearchDirection::Up, Some(s)) => ((Unbounded, Excluded(s)), true),
        (SearchDirection::Down, None) => ((Unbounded, Unbounded), false),
        (SearchDirection::Down, Some(s)) => ((Excluded(s), Unbounded), false),
    };
    let page_size = q.page_size as usize;
    let mut data: Vec<ChatMessage> = Vec::new();
    loop {
        let want = page_size.saturating_add(1) - data.len();
        let read = reader.messages(room, range, newest_first, want)?;
        let exhausted = read.len() < want;
        let Some(last) = read.last().map(|m| m.seq) else {
            break;
        };
        data.extend(read.into_iter().filter_map(|m| seen(ChatMessage::new(m))));
        if exhausted || data.len() > page_size {
            break;
        }
        // Some were hidden: read on past the last one read.
        range = if newest_first {
            (Unbounded, Excluded(last))
        } else {
            (Excluded(last), Unbounded)
        };
    }
    let more = data.len() > page_size;
    data.truncate(page_size);
    let cursor = if more {
        data.last().map(ChatMessage::seq)
    } else {
        None
    };
    Ok(ChatCursorResult { data, cursor })
}
