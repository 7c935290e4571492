//! The supervisor actor: the only place that creates and destroys room actors.
//!
//! It owns room placement (round robin over one arbiter per core), id generation, creation,
//! activation, and recovery: actix does not restart an actor that panicked, so each room actor
//! reports its exit ([`RoomExited`]); the supervisor forgets the dead actor and starts a fresh
//! one from the store. It never reads the store itself: a room to activate is read on the
//! store's thread (by the caller, or by a future this actor spawns) and handed over as [`Spawn`].

use std::sync::Arc;

use actix::prelude::*;
use actix_rt::ArbiterHandle;
use std::ops::Bound::Unbounded;

use roomcast_model::{
    ChatError, ChatMessage, ChatRoom, History, MessageData, Room, RoomId, RoomRecord, RoomSpec,
    UserId,
};
use roomcast_store::{Commit, Reader, Store, StoreError, WriteSet};

use crate::directory::RoomEntry;
use crate::room_actor::{RoomActor, RoomStart};
use crate::session::{RoomReservation, Session};
use crate::{storage_error, SessionKey, Shared};

pub(crate) struct Supervisor {
    shared: Arc<Shared>,
    store: Store,
    arbiters: Vec<ArbiterHandle>,
    next_arbiter: usize,
    last_id: u64,
    generation: u64,
}

impl Supervisor {
    pub(crate) fn new(shared: Arc<Shared>, store: Store, arbiters: Vec<ArbiterHandle>) -> Self {
        let last_id = shared.directory.max_id().map_or(0, RoomId::as_u64);
        Supervisor {
            shared,
            store,
            arbiters,
            next_arbiter: 0,
            last_id,
            generation: 0,
        }
    }

    /// Ids grow with time (ms x 1000) and never repeat, even across restarts: the newest room
    /// has the largest id.
    /// At the end of the id space (a clock past the year 584 million) there is no new id: an
    /// error, never a repeated one.
    fn next_id(&mut self) -> Result<RoomId, ChatError> {
        let from_clock = (self.shared.clock.now_ms().max(0) as u64).saturating_mul(1000);
        let after_last = self
            .last_id
            .checked_add(1)
            .ok_or_else(|| ChatError::General("room ids are exhausted".into()))?;
        self.last_id = from_clock.max(after_last);
        Ok(RoomId::from_u64(self.last_id))
    }

    #[allow(clippy::too_many_arguments)]
    fn spawn(
        &mut self,
        room: Room,
        sessions: Vec<Arc<Session>>,
        reservations: Vec<RoomReservation>,
        entry: Arc<RoomEntry>,
        me: Addr<Supervisor>,
        recent: History,
        recovered: bool,
        woke: bool,
        keys: Vec<roomcast_store::IdempotencyRecord>,
        departures: Vec<roomcast_store::Departure>,
    ) -> Addr<RoomActor> {
        self.generation += 1;
        let generation = self.generation;
        let arbiter = &self.arbiters[self.next_arbiter % self.arbiters.len()];
        self.next_arbiter += 1;
        let start = RoomStart {
            room,
            sessions,
            entry: entry.clone(),
            shared: self.shared.clone(),
            store: self.store.clone(),
            supervisor: me,
            generation,
            now: self.shared.clock.now_ms(),
            recent,
            recovered,
            woke,
            reservations,
            keys,
            departures,
        };
        let addr = RoomActor::start_in_arbiter(arbiter, move |_| RoomActor::new(start));
        entry.set_actor(generation, addr.clone(), self.shared.clock.now_ms());
        addr
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;
}

/// The next room id (cluster mode: claimed in the cluster before the room is created with it).
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
pub(crate) struct NextId;

impl Message for NextId {
    type Result = Result<RoomId, ChatError>;
}

impl Handler<NextId> for Supervisor {
    type Result = Result<RoomId, ChatError>;

    fn handle(&mut self, _: NextId, _: &mut Context<Self>) -> Self::Result {
        self.next_id()
    }
}

/// Create a room owned by `owner` with `members` in it.
pub(crate) struct CreateRoom {
    /// Its id, if claimed already (cluster mode).
    pub(crate) id: Option<RoomId>,
    pub(crate) owner: UserId,
    pub(crate) spec: RoomSpec,
    pub(crate) room_limits: roomcast_model::RoomLimits,
    pub(crate) members: Vec<Arc<Session>>,
    /// The members' places against rooms-per-user, held until the room has started.
    pub(crate) reservations: Vec<RoomReservation>,
}

impl Message for CreateRoom {
    type Result = Result<(ChatRoom, Commit), ChatError>;
}

impl Handler<CreateRoom> for Supervisor {
    type Result = Result<(ChatRoom, Commit), ChatError>;

    fn handle(&mut self, msg: CreateRoom, ctx: &mut Context<Self>) -> Self::Result {
        let shared = self.shared.clone();
        let limits = &shared.limits;
        if shared.directory.len() >= limits.max_rooms {
            return Err(ChatError::ExceedServiceLimit(format!(
                "the engine holds its maximum of {} rooms",
                limits.max_rooms
            )));
        }
        let now = shared.clock.now_ms();
        let member_ids = msg.members.iter().map(|s| s.user().clone()).collect();
        let id = match msg.id {
            Some(id) => id,
            None => self.next_id()?,
        };
        let room = Room::create(
            id,
            msg.owner.clone(),
            msg.spec,
            msg.room_limits,
            member_ids,
            limits,
            now,
        )?;
        let mut set = WriteSet::new();
        set.put_room(room.record()).map_err(storage_error)?;
        let commit = self.store.submit(set);
        let snapshot = room.snapshot(Some(&msg.owner));
        let entry = RoomEntry::new(snapshot.clone());
        self.shared.directory.insert(entry.clone());
        crate::obs::rooms(self.shared.directory.len());
        crate::obs::members_changed(room.member_count() as i64);
        let recent = History::new(room.limits().join_replay_count);
        // The members' places become the room in their sessions as the actor starts.
        self.spawn(
            room,
            msg.members,
            msg.reservations,
            entry,
            ctx.address(),
            recent,
            false,
            false,
            Vec::new(),
            Vec::new(),
        );
        tracing::info!(room = %id, owner = %msg.owner, "room created");
        Ok((snapshot, commit))
    }
}

/// Find the live actor of a room: `Err(starts)` if it is not running (the caller loads the
/// room from the store, off this actor, and sends [`Spawn`] with `starts`, the number of
/// actors the room had: with none running, every earlier actor's writes are submitted, so a
/// read submitted now sees them).
pub(crate) struct Activate(pub(crate) RoomId);

impl Message for Activate {
    type Result = Result<Result<Addr<RoomActor>, u64>, ChatError>;
}

impl Handler<Activate> for Supervisor {
    type Result = Result<Result<Addr<RoomActor>, u64>, ChatError>;

    fn handle(&mut self, Activate(id): Activate, _: &mut Context<Self>) -> Self::Result {
        let entry = self
            .shared
            .directory
            .get(id)
            .filter(|e| !e.is_destroyed())
            .ok_or_else(|| ChatError::RoomNotExist(id.to_string()))?;
        Ok(entry.live_actor().ok_or_else(|| entry.starts()))
    }
}

/// What a room actor starts from, read from the store.
pub(crate) struct RoomData {
    record: RoomRecord,
    last_seq: u64,
    /// The number of its newest audit-log entry.
    audit_seq: u64,
    /// The newest retained messages, oldest first.
    newest: Vec<MessageData>,
    /// The room's idempotency keys (those whose window ended are dropped by the actor).
    keys: Vec<roomcast_store::IdempotencyRecord>,
    /// Cluster mode: its members' departures kept (see [`roomcast_store::Departure`]).
    departures: Vec<roomcast_store::Departure>,
}

/// Reads room `id` from the store (on the store's thread). `None` if it is not stored.
pub(crate) fn load_room(
    reader: &Reader,
    id: RoomId,
    replay: usize,
) -> Result<Option<RoomData>, StoreError> {
    let Some(record) = reader.room(id)? else {
        return Ok(None);
    };
    // The room's own replay count, where it sets one.
    let replay = record.limits.join_replay_count.unwrap_or(replay);
    let last_seq = reader.last_seq(id)?;
    let audit_seq = reader.last_audit_seq(id)?;
    // Enough for the replay to hold `replay` messages every member sees, shadowed ones among them.
    let mut newest = reader.messages(id, (Unbounded, Unbounded), true, replay.saturating_mul(8))?;
    newest.reverse();
    let keys = reader.idempotency_keys(id)?;
    let departures = reader.departures(id)?;
    Ok(Some(RoomData {
        record,
        last_seq,
        audit_seq,
        newest,
        keys,
        departures,
    }))
}

/// Start room `id` from `data`, unless its actor is running already (another caller loaded it
/// first: then that one is answered), or one ran since `data` was read (`starts` is no longer
/// the room's count of actors: an actor started, may have written, and went to sleep
/// meanwhile, so `data` may be stale; then `None`, and the caller reads again).
pub(crate) struct Spawn {
    pub(crate) id: RoomId,
    pub(crate) data: RoomData,
    pub(crate) starts: u64,
}

impl Message for Spawn {
    type Result = Result<Option<Addr<RoomActor>>, ChatError>;
}

impl Handler<Spawn> for Supervisor {
    type Result = Result<Option<Addr<RoomActor>>, ChatError>;

    fn handle(&mut self, msg: Spawn, ctx: &mut Context<Self>) -> Self::Result {
        let entry = self
            .shared
            .directory
            .get(msg.id)
            .filter(|e| !e.is_destroyed())
            .ok_or_else(|| ChatError::RoomNotExist(msg.id.to_string()))?;
        if let Some(addr) = entry.live_actor() {
            return Ok(Some(addr));
        }
        if entry.starts() != msg.starts {
            return Ok(None);
        }
        Ok(Some(self.start_loaded(
            msg.id,
            msg.data,
            entry,
            ctx.address(),
        )))
    }
}

impl Supervisor {
    /// Starts room `id`'s actor from what the store held. If sessions still list the room, its
    /// previous actor died: the room gets back those members, who are told it recovered.
    fn start_loaded(
        &mut self,
        id: RoomId,
        data: RoomData,
        entry: Arc<RoomEntry>,
        me: Addr<Supervisor>,
    ) -> Addr<RoomActor> {
        let now = self.shared.clock.now_ms();
        let mut room = Room::from_record(data.record, &self.shared.limits, data.last_seq, now);
        room.set_audit_seq(data.audit_seq);
        let mut recent = History::new(room.limits().join_replay_count);
        for m in data.newest {
            recent.push(ChatMessage::new(m));
        }
        let mut members: Vec<Arc<Session>> = self
            .shared
            .sessions
            .read()
            .iter()
            .filter(|SessionKey(s)| s.is_in(id))
            .map(|SessionKey(s)| s.clone())
            .collect();
        // A room that hibernated wakes with the (offline, exempt) members it had, in the order
        // they joined, without a recovery notice: nothing was lost.
        let slept = entry.take_hibernated();
        if let Some(order) = &slept {
            let at = |s: &Arc<Session>| {
                order
                    .iter()
                    .position(|u| u == s.user())
                    .unwrap_or(usize::MAX)
            };
            members.sort_by_key(at);
        }
        // Cluster mode: a session that missed its user's departure (its node was cut off, and
        // the room changed owners since) is not a member: it is told, and let go.
        // A session whose user is blocked likewise (blocked while its node was away, by an
        // owner that did not know it was in).
        members.retain(|s| {
            let departed = crate::room_actor::departed_after(&data.departures, s, id);
            let Some(event) = crate::room_actor::kept_out(&room, s.user(), departed, false, now)
            else {
                return true;
            };
            s.exited(id);
            // Out of the room's fan-out too (a mirror of it here may have put it there).
            let mut shards = self.shared.fanout.room_shards();
            self.shared.fanout.remove(id, s, &mut shards);
            if let Some(event) = event {
                self.shared
                    .fanout
                    .send_to(s.clone(), vec![crate::ClientEvent::Room(Arc::new(event))]);
            }
            false
        });
        for s in &members {
            room.restore_member(s.user().clone());
        }
        let woke = slept.is_some();
        let recovered = !members.is_empty() && !woke;
        tracing::info!(room = %id, last_seq = data.last_seq, recovered, "activating room from the store");
        self.spawn(
            room,
            members,
            Vec::new(),
            entry,
            me,
            recent,
            recovered,
            woke,
            data.keys,
            data.departures,
        )
    }
}

/// Room `id` was destroyed: forget it.
pub(crate) struct Forget(pub(crate) RoomId);

impl Message for Forget {
    type Result = ();
}

impl Handler<Forget> for Supervisor {
    type Result = ();

    fn handle(&mut self, Forget(room): Forget, _: &mut Context<Self>) {
        self.shared.directory.remove(room);
        crate::obs::rooms(self.shared.directory.len());
        tracing::info!(room = %room, "room destroyed");
    }
}

/// A room actor went away; `clean` is false if it did not stop normally (it panicked).
pub(crate) struct RoomExited {
    pub(crate) room: RoomId,
    pub(crate) generation: u64,
    pub(crate) clean: bool,
}

impl Message for RoomExited {
    type Result = ();
}

impl Handler<RoomExited> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: RoomExited, ctx: &mut Context<Self>) {
        let Some(entry) = self.shared.directory.get(msg.room) else {
            return;
        };
        if entry.clear_actor(msg.generation) && !msg.clean && !entry.is_destroyed() {
            tracing::error!(room = %msg.room, "room actor died; restarting it from the store");
            // Read on the store's thread (after the dead actor's writes), started here when read.
            let id = msg.room;
            let replay = self.shared.limits.join_replay_count;
            // The dead actor submits nothing more, and none runs: the read sees every write.
            let starts = entry.starts();
            let read = self.store.read(move |reader| load_room(reader, id, replay));
            ctx.spawn(fut::wrap_future::<_, Self>(read).map(move |loaded, act, ctx| {
                let Some(entry) = act.shared.directory.get(id).filter(|e| !e.is_destroyed()) else {
                    return;
                };
                if entry.live_actor().is_some() || entry.starts() != starts {
                    // A call loaded it first (and it may have run and slept since: what was
                    // read may be stale; the next call loads it again).
                    return;
                }
                match loaded {
                    Ok(Ok(Some(data))) => {
                        act.start_loaded(id, data, entry, ctx.address());
                    }
                    Ok(Ok(None)) => tracing::error!(room = %id, "room restart failed: it is no longer stored"),
                    Ok(Err(e)) | Err(e) => {
                        tracing::error!(room = %id, error = %e, "room restart failed; it will be retried on its next call");
                    }
                }
            }));
        }
    }
}
