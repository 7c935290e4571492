//! The room actor: a thin shell over one pure [`Room`].
//!
//! For each call it runs the pure rules (`Room::apply`), persists what changed, hands the events
//! to the fan-out shards and replies. It never waits: the store's flush is a [`Commit`] future
//! returned to the caller, who awaits it off the actor. So one room's calls are serial, and a
//! slow disk or a slow member never blocks the room.

use std::collections::HashMap;
use std::sync::Arc;

use actix::{Actor, ActorContext, Addr, Context, Handler, Message};
use roomcast_model::{Audience, ChatError, ChatRoom, Command, Effects, Room, UserId};
use roomcast_store::{Commit, Store};

use crate::directory::RoomEntry;
use crate::mailbox::Mailbox;
use crate::supervisor::{RoomExited, Supervisor};
use crate::{storage_error, ClientEvent, Shared};

/// A call to a room.
pub(crate) enum RoomOp {
    Join { user: UserId, mailbox: Arc<Mailbox> },
    Leave { user: UserId, owner_may_leave: bool },
    Destroy { user: UserId },
    Info { viewer: UserId },
}

/// What a room call returns: a snapshot for calls that return the room, and the commit to await
/// before the call may report success.
pub(crate) struct RoomReply {
    pub(crate) room: Option<ChatRoom>,
    pub(crate) commit: Option<Commit>,
}

pub(crate) struct RoomCall(pub(crate) RoomOp);

impl Message for RoomCall {
    type Result = Result<RoomReply, ChatError>;
}

pub(crate) struct RoomActor {
    room: Room,
    /// The mailbox of each member, for targeted deliveries. Broadcasts go through the shards,
    /// which keep their own per-room lists.
    mailboxes: HashMap<UserId, Arc<Mailbox>>,
    entry: Arc<RoomEntry>,
    shared: Arc<Shared>,
    store: Store,
    exit: ExitGuard,
}

/// Tells the supervisor when the actor goes away. Dropped without `stopped()` having run means
/// the actor died abnormally (a panic unwound through it); actix does not restart such an actor,
/// so the supervisor forgets it and the next call reloads the room from the store.
struct ExitGuard {
    supervisor: Addr<Supervisor>,
    generation: u64,
    clean: bool,
    room: roomcast_model::RoomId,
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

impl RoomActor {
    pub(crate) fn new(
        room: Room,
        mailboxes: HashMap<UserId, Arc<Mailbox>>,
        entry: Arc<RoomEntry>,
        shared: Arc<Shared>,
        store: Store,
        supervisor: Addr<Supervisor>,
        generation: u64,
    ) -> RoomActor {
        let exit = ExitGuard {
            supervisor,
            generation,
            clean: false,
            room: room.id(),
        };
        RoomActor {
            room,
            mailboxes,
            entry,
            shared,
            store,
            exit,
        }
    }

    fn execute(
        &mut self,
        command: Command,
        joining: Option<Arc<Mailbox>>,
        ctx: &mut Context<Self>,
    ) -> Result<Option<Commit>, ChatError> {
        let fx = self.room.apply(command)?;
        let mut commit = None;
        if fx.record_changed {
            let written = if fx.destroyed {
                self.store.delete_room(self.room.id())
            } else {
                self.store.put_room(self.room.record())
            };
            if let Err(e) = written {
                // Fail-stop: memory is ahead of the store. Stop, so that the next call reloads
                // the room from what the store holds.
                tracing::error!(room = %self.room.id(), error = %e, "room write failed; restarting the room");
                ctx.stop();
                return Err(storage_error(e));
            }
            commit = Some(self.store.commit());
            if !fx.destroyed {
                self.entry.set_summary(self.room.snapshot(None));
            }
        }
        self.deliver(fx, joining);
        Ok(commit)
    }

    /// Applies membership changes to the delivery tables, then delivers the events in order.
    fn deliver(&mut self, fx: Effects, joining: Option<Arc<Mailbox>>) {
        let room_id = self.room.id();
        let fanout = &self.shared.fanout;
        if let Some(mailbox) = joining {
            for user in &fx.joined {
                self.mailboxes.insert(user.clone(), mailbox.clone());
                fanout.add(room_id, mailbox.clone());
            }
        }
        let mut gone = HashMap::with_capacity(fx.left.len());
        for user in fx.left {
            if let Some(mailbox) = self.mailboxes.remove(&user) {
                fanout.remove(room_id, &mailbox);
                gone.insert(user, mailbox);
            }
        }
        for out in fx.events {
            let item = ClientEvent::Room(Arc::new(out.event));
            match out.to {
                Audience::Members => fanout.broadcast(room_id, item, None),
                Audience::MembersExcept(user) => {
                    let except = self.mailboxes.get(&user).map(|m| m.id());
                    fanout.broadcast(room_id, item, except);
                }
                Audience::Users(users) => {
                    for user in users {
                        if let Some(mailbox) = self.mailboxes.get(&user).or(gone.get(&user)) {
                            fanout.send_to(mailbox.clone(), item.clone());
                        }
                    }
                }
            }
        }
        if fx.destroyed {
            fanout.drop_room(room_id);
        }
        self.entry.set_member_count(self.room.member_count());
    }
}

impl Actor for RoomActor {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Context<Self>) {
        for mailbox in self.mailboxes.values() {
            self.shared.fanout.add(self.room.id(), mailbox.clone());
        }
        self.entry.set_member_count(self.room.member_count());
        tracing::debug!(room = %self.room.id(), "room actor started");
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.exit.clean = true;
    }
}

impl Handler<RoomCall> for RoomActor {
    type Result = Result<RoomReply, ChatError>;

    fn handle(&mut self, RoomCall(op): RoomCall, ctx: &mut Context<Self>) -> Self::Result {
        match op {
            RoomOp::Join { user, mailbox } => {
                let viewer = user.clone();
                let commit = self.execute(Command::Join { user }, Some(mailbox), ctx)?;
                Ok(RoomReply {
                    room: Some(self.room.snapshot(Some(&viewer))),
                    commit,
                })
            }
            RoomOp::Leave {
                user,
                owner_may_leave,
            } => {
                let command = Command::Leave {
                    user,
                    owner_may_leave,
                };
                let commit = self.execute(command, None, ctx)?;
                Ok(RoomReply { room: None, commit })
            }
            RoomOp::Destroy { user } => {
                let commit = self.execute(Command::Destroy { user }, None, ctx)?;
                self.entry.mark_destroyed();
                ctx.stop();
                Ok(RoomReply { room: None, commit })
            }
            RoomOp::Info { viewer } => Ok(RoomReply {
                room: Some(self.room.snapshot(Some(&viewer))),
                commit: None,
            }),
        }
    }
}
