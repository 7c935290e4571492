//! The supervisor actor: the only place that creates and destroys room actors.
//!
//! It owns room placement (round robin over one arbiter per core), id generation, creation,
//! lazy activation from the store, destruction, and recovery: actix does not restart an actor
//! that panicked, so each room actor reports its exit ([`RoomExited`]); the supervisor forgets a
//! dead actor and the next call to the room activates a fresh one from the store.

use std::sync::Arc;

use actix::prelude::*;
use actix_rt::ArbiterHandle;
use std::ops::Bound::Unbounded;

use roomcast_model::{ChatError, ChatMessage, ChatRoom, History, Room, RoomId, RoomSpec, UserId};
use roomcast_store::{Commit, Store};

use crate::directory::RoomEntry;
use crate::room_actor::{RoomActor, RoomCall, RoomOp, RoomStart};
use crate::session::Session;
use crate::{mailbox_error, storage_error, SessionKey, Shared};

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
    fn next_id(&mut self) -> RoomId {
        let from_clock = (self.shared.clock.now_ms().max(0) as u64).saturating_mul(1000);
        self.last_id = from_clock.max(self.last_id + 1);
        RoomId::from_u64(self.last_id)
    }

    #[allow(clippy::too_many_arguments)]
    fn spawn(
        &mut self,
        room: Room,
        sessions: Vec<Arc<Session>>,
        entry: Arc<RoomEntry>,
        me: Addr<Supervisor>,
        recent: History,
        recovered: bool,
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
        };
        let addr = RoomActor::start_in_arbiter(arbiter, move |_| RoomActor::new(start));
        entry.set_actor(generation, addr.clone());
        addr
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;
}

/// Create a room owned by `owner` with `members` in it.
pub(crate) struct CreateRoom {
    pub(crate) owner: UserId,
    pub(crate) spec: RoomSpec,
    pub(crate) members: Vec<Arc<Session>>,
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
        let id = self.next_id();
        let room = Room::create(id, msg.owner.clone(), msg.spec, member_ids, limits, now)?;
        self.store.put_room(room.record()).map_err(storage_error)?;
        let commit = self.store.commit();
        let snapshot = room.snapshot(Some(&msg.owner));
        let entry = RoomEntry::new(snapshot.clone());
        self.shared.directory.insert(entry.clone());
        crate::obs::rooms(self.shared.directory.len());
        crate::obs::members_changed(room.member_count() as i64);
        let recent = History::new(self.shared.limits.join_replay_count);
        self.spawn(room, msg.members, entry, ctx.address(), recent, false);
        tracing::info!(room = %id, owner = %msg.owner, "room created");
        Ok((snapshot, commit))
    }
}

/// Find the live actor of a room, starting it from the store if it is not running.
pub(crate) struct Activate(pub(crate) RoomId);

impl Message for Activate {
    type Result = Result<Addr<RoomActor>, ChatError>;
}

impl Handler<Activate> for Supervisor {
    type Result = Result<Addr<RoomActor>, ChatError>;

    fn handle(&mut self, Activate(id): Activate, ctx: &mut Context<Self>) -> Self::Result {
        let entry = self
            .shared
            .directory
            .get(id)
            .filter(|e| !e.is_destroyed())
            .ok_or_else(|| ChatError::RoomNotExist(id.to_string()))?;
        if let Some(addr) = entry.live_actor() {
            return Ok(addr);
        }
        self.load(id, entry, ctx.address(), false)
    }
}

impl Supervisor {
    /// Starts room `id`'s actor from the store. A `recovered` room (its previous actor died)
    /// gets back the members it had, found by their sessions, which still list it.
    fn load(
        &mut self,
        id: RoomId,
        entry: Arc<RoomEntry>,
        me: Addr<Supervisor>,
        recovered: bool,
    ) -> Result<Addr<RoomActor>, ChatError> {
        let record = self
            .store
            .room(id)
            .map_err(storage_error)?
            .ok_or_else(|| ChatError::RoomNotExist(id.to_string()))?;
        let last_seq = self
            .store
            .message_bounds(id)
            .map_err(storage_error)?
            .map_or(0, |(_, last)| last);
        let replay = self.shared.limits.join_replay_count;
        let mut recent = History::new(replay);
        let mut newest = self
            .store
            .messages(id, (Unbounded, Unbounded), true, replay)
            .map_err(storage_error)?;
        newest.reverse();
        for m in newest {
            recent.push(ChatMessage::new(m));
        }
        tracing::info!(room = %id, last_seq, recovered, "activating room from the store");
        let now = self.shared.clock.now_ms();
        let mut room = Room::from_record(record, &self.shared.limits, last_seq, now);
        let mut members = Vec::new();
        if recovered {
            for SessionKey(session) in self.shared.sessions.read().iter() {
                if session.is_in(id) {
                    members.push(session.clone());
                }
            }
            for s in &members {
                room.restore_member(s.user().clone());
            }
        }
        Ok(self.spawn(room, members, entry, me, recent, recovered))
    }
}

/// Destroy a room, if `user` may.
pub(crate) struct DestroyRoom {
    pub(crate) user: UserId,
    pub(crate) room: RoomId,
}

impl Message for DestroyRoom {
    type Result = Result<Option<Commit>, ChatError>;
}

impl Handler<DestroyRoom> for Supervisor {
    type Result = ResponseActFuture<Self, Result<Option<Commit>, ChatError>>;

    fn handle(&mut self, msg: DestroyRoom, ctx: &mut Context<Self>) -> Self::Result {
        let addr = match self.handle(Activate(msg.room), ctx) {
            Ok(addr) => addr,
            Err(e) => return Box::pin(fut::ready(Err(e))),
        };
        let room = msg.room;
        let call = addr.send(RoomCall(RoomOp::Destroy { user: msg.user }));
        Box::pin(
            fut::wrap_future::<_, Self>(call).map(move |result, act, _| {
                let reply = result.map_err(|e| mailbox_error(e, "destroy"))??;
                act.shared.directory.remove(room);
                crate::obs::rooms(act.shared.directory.len());
                tracing::info!(room = %room, "room destroyed");
                Ok(reply.commit)
            }),
        )
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
            if let Err(e) = self.load(msg.room, entry, ctx.address(), true) {
                tracing::error!(room = %msg.room, error = %e, "room restart failed; it will be retried on its next call");
            }
        }
    }
}
