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
    AttributeFailures, Audience, ChatCursorResult, ChatError, ChatMessage, ChatRoom, ChatRoomEvent,
    Command, Effects, History, HistoryQuery, MessageId, MessagePriority, OutgoingMessage, Room,
    RoomId, SearchDirection, Timer, UserId,
};
use roomcast_store::{Commit, LocalCopy, Store};

use crate::directory::RoomEntry;
use crate::fanout::Except;
use crate::session::{RoomReservation, Session};
use crate::supervisor::{RoomExited, Supervisor};
use crate::{obs, storage_error, ClientEvent, QueryAnswer, RoomQuery, RoomStats, Shared};

/// A call to a room.
pub(crate) enum RoomOp {
    Join {
        session: Arc<Session>,
        /// The user's place against the rooms-per-user limit, released once the room answered.
        reservation: Option<RoomReservation>,
    },
    Leave {
        user: UserId,
        owner_may_leave: bool,
    },
    Destroy {
        user: UserId,
    },
    Info {
        viewer: UserId,
    },
    Send {
        /// The sender's mailbox, which the message skips.
        except: Option<u64>,
        from: UserId,
        message: OutgoingMessage,
        msg_id: MessageId,
    },
    History {
        viewer: UserId,
        query: HistoryQuery,
    },
    Stats,
    /// A state change with no reply but its per-key failures (moderation, attributes).
    Apply(Command),
    /// A read.
    Query {
        viewer: UserId,
        query: RoomQuery,
    },
    /// Panics (fault injection for tests of the supervisor's recovery).
    #[cfg(feature = "fault-injection")]
    Panic,
}

impl RoomOp {
    /// The operation's name, for tracing.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            RoomOp::Join { .. } => "join",
            RoomOp::Leave { .. } => "leave",
            RoomOp::Destroy { .. } => "destroy",
            RoomOp::Info { .. } => "info",
            RoomOp::Send { .. } => "send",
            RoomOp::History { .. } => "history",
            RoomOp::Stats => "stats",
            RoomOp::Apply(_) => "apply",
            RoomOp::Query { .. } => "query",
            #[cfg(feature = "fault-injection")]
            RoomOp::Panic => "panic",
        }
    }
}

/// What a room call returns.
pub(crate) enum RoomReply {
    Done,
    Room(ChatRoom),
    Message(ChatMessage),
    History(ChatCursorResult<ChatMessage>),
    Stats(RoomStats),
    Failures(AttributeFailures),
    Answer(QueryAnswer),
}

/// A reply and the commit to await before the call may report success.
pub(crate) struct Replied {
    pub(crate) reply: RoomReply,
    pub(crate) commit: Option<Commit>,
}

pub(crate) struct RoomCall(pub(crate) RoomOp);

impl Message for RoomCall {
    type Result = Result<Replied, ChatError>;
}

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
    /// Set when a call panicked: the actor stops as failed.
    poisoned: bool,
    /// Join and exit events of a big room held for its staff (with whom each skips), sent
    /// together: a join storm costs one delivery per staff member per batch, not per join.
    staff_batch: Vec<(ClientEvent, Vec<UserId>)>,
    staff_flush_scheduled: bool,
    /// Set while a join is applied if the joiner's session was offline when it entered, with
    /// when its grace period starts.
    joined_offline: Option<(UserId, i64)>,
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
}

impl RoomActor {
    pub(crate) fn new(start: RoomStart) -> RoomActor {
        let exit = ExitGuard {
            supervisor: start.supervisor,
            generation: start.generation,
            clean: false,
            room: start.room.id(),
        };
        RoomActor {
            recent: start.recent,
            room: start.room,
            initial: start.sessions,
            entry: start.entry,
            shared: start.shared,
            store: start.store,
            exit,
            started_at: start.now,
            recovered: start.recovered,
            poisoned: false,
            staff_batch: Vec::new(),
            staff_flush_scheduled: false,
            joined_offline: None,
        }
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
        let wrote = match self.persist(&fx) {
            Ok(wrote) => wrote,
            Err(e) => {
                // Fail-stop: memory is ahead of the store. Stop, so that the next call reloads
                // the room from what the store holds.
                tracing::error!(room = %self.room.id(), error = %e, "room write failed; restarting the room");
                ctx.stop();
                return Err(storage_error(e));
            }
        };
        let commit = wrote.then(|| self.store.commit());
        if fx.record_changed && !fx.destroyed {
            self.entry.set_summary(self.room.snapshot(None));
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

    /// Writes what `fx` changed: the room's record, the message sent (and retention), the local
    /// copies of members who joined or left. True if anything was written.
    fn persist(&mut self, fx: &Effects) -> Result<bool, roomcast_store::StoreError> {
        let room = self.room.id();
        let store = &self.store;
        let limits = &self.shared.limits;
        let mut wrote = false;
        if fx.record_changed {
            if fx.destroyed {
                store.delete_room(room)?;
                store.delete_messages_before(room, u64::MAX)?;
            } else {
                store.put_room(self.room.record())?;
            }
            wrote = true;
        }
        if let Some(message) = &fx.message {
            store.put_message(message.data())?;
            let seq = message.seq();
            if seq > limits.history_retention as u64 {
                store.delete_messages_before(room, seq + 1 - limits.history_retention as u64)?;
            }
            if seq % AGE_CHECK_EVERY == 0 {
                if let Some(max_age) = limits.history_max_age_ms {
                    let before = message
                        .server_time()
                        .saturating_sub(roomcast_model::ms_to_timestamp(max_age));
                    store.delete_messages_older_than(room, before)?;
                }
            }
            wrote = true;
        }
        for user in &fx.joined {
            // A copy that is deleted on exit lives only as long as the membership: the session
            // remembers where it starts. Only a copy that is kept after leaving is written.
            let keeps = self
                .shared
                .session_of(user)
                .is_some_and(|s| !s.deletes_messages_on_exit());
            if keeps {
                let mut copy = store.copy(user, room)?.unwrap_or_else(|| LocalCopy {
                    user: user.clone(),
                    room,
                    spans: Vec::new(),
                });
                // The replay on join may reach back into the span of an earlier membership:
                // the new span starts after it, so that no message is in the copy twice.
                let after_previous = copy
                    .spans
                    .iter()
                    .map(|(from, to)| to.unwrap_or(*from).saturating_add(1))
                    .max()
                    .unwrap_or(0);
                copy.spans
                    .push((self.copy_from().max(after_previous), None));
                store.put_copy(&copy)?;
                wrote = true;
            }
        }
        for user in &fx.left {
            let session = self.shared.session_of(user);
            let delete = session
                .as_ref()
                .is_none_or(|s| s.deletes_messages_on_exit());
            let stored = store.copy(user, room)?;
            let last = self.room.last_seq();
            match (delete, stored) {
                (true, Some(_)) => {
                    store.delete_copy(user, room)?;
                    wrote = true;
                }
                (true, None) => {}
                (false, Some(mut copy)) => {
                    match copy.spans.last_mut() {
                        Some((_, end @ None)) => *end = Some(last),
                        _ => {
                            let from = session.and_then(|s| s.copy_start(room)).unwrap_or(last + 1);
                            copy.spans.push((from, Some(last)));
                        }
                    }
                    store.put_copy(&copy)?;
                    wrote = true;
                }
                (false, None) => {
                    let from = session.and_then(|s| s.copy_start(room)).unwrap_or(last + 1);
                    store.put_copy(&LocalCopy {
                        user: user.clone(),
                        room,
                        spans: vec![(from, Some(last))],
                    })?;
                    wrote = true;
                }
            }
        }
        Ok(wrote)
    }

    /// Where a joiner's local copy starts: the first message replayed to it, or the next one.
    fn copy_from(&self) -> u64 {
        self.recent
            .newest(self.shared.limits.join_replay_count)
            .first()
            .map_or(self.room.last_seq() + 1, ChatMessage::seq)
    }

    /// A page of retained history, read from the store (newest first up, oldest first down).
    fn history_page(&self, q: HistoryQuery) -> Result<ChatCursorResult<ChatMessage>, ChatError> {
        use std::ops::Bound::{Excluded, Unbounded};
        let room = self.room.id();
        let (range, newest_first) = match (q.direction, q.start_seq) {
            (SearchDirection::Up, None) => ((Unbounded, Unbounded), true),
            (SearchDirection::Up, Some(s)) => ((Unbounded, Excluded(s)), true),
            (SearchDirection::Down, None) => ((Unbounded, Unbounded), false),
            (SearchDirection::Down, Some(s)) => ((Excluded(s), Unbounded), false),
        };
        let mut data = self
            .store
            .messages(room, range, newest_first, q.page_size + 1)
            .map_err(storage_error)?;
        let more = data.len() > q.page_size;
        data.truncate(q.page_size);
        let cursor = if more {
            data.last().map(|m| m.seq)
        } else {
            None
        };
        Ok(ChatCursorResult {
            data: data.into_iter().map(ChatMessage::new).collect(),
            cursor,
        })
    }

    fn answer(&self, viewer: &UserId, query: RoomQuery) -> Result<QueryAnswer, ChatError> {
        let room = &self.room;
        Ok(match query {
            RoomQuery::MuteList => QueryAnswer::MuteList(room.mute_list(viewer, self.now())?),
            RoomQuery::AllowList => QueryAnswer::Users(room.allow_list(viewer)?),
            RoomQuery::IsOnAllowList => QueryAnswer::Bool(room.is_on_allow_list(viewer)?),
            RoomQuery::BlockList {
                page_num,
                page_size,
            } => QueryAnswer::Users(room.block_list(viewer, page_num, page_size)?),
            RoomQuery::Members { cursor, page_size } => {
                let (users, next) = room.members_page(viewer, cursor, page_size)?;
                QueryAnswer::Members(ChatCursorResult {
                    data: users,
                    cursor: next,
                })
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
        let fanout = &shared.fanout;
        if let Some(session) = joining {
            if !fx.joined.is_empty() {
                if let Some(since) = session.entered(room_id, self.copy_from()) {
                    // Away since before it entered: its grace period here starts now.
                    self.joined_offline = Some((session.user().clone(), since.max(self.now())));
                }
                fanout.add(room_id, session.clone());
            }
        }
        let mut gone = HashMap::with_capacity(fx.left.len());
        for user in fx.left {
            if let Some(session) = shared.session_of(&user) {
                session.exited(room_id);
                fanout.remove(room_id, &session);
                gone.insert(user, session);
            }
        }
        let member = |user: &UserId| gone.get(user).cloned().or_else(|| shared.session_of(user));
        for out in fx.events {
            let item = ClientEvent::Room(Arc::new(out.event));
            match out.to {
                Audience::Members => fanout.broadcast(room_id, item, Except::NONE),
                Audience::MembersExcept(users) => {
                    debug_assert!(users.len() <= 2, "a broadcast skips at most two members");
                    let ids = users
                        .iter()
                        .filter_map(|u| member(u).map(|m| m.mailbox().id()));
                    fanout.broadcast(room_id, item, Except::of(ids));
                }
                Audience::StaffExcept(users) => {
                    self.staff_batch.push((item, users));
                }
                Audience::Users(users) => {
                    for user in users {
                        if let Some(m) = member(&user) {
                            fanout.send_to(m, vec![item.clone()]);
                        }
                    }
                }
                Audience::MembersAmong(users) => {
                    for user in users {
                        if self.room.is_member(&user) {
                            if let Some(m) = member(&user) {
                                fanout.send_to(m, vec![item.clone()]);
                            }
                        }
                    }
                }
            }
        }
        if let Some(message) = fx.message {
            self.recent.push(message.clone());
            fanout.broadcast(room_id, ClientEvent::Message(message), Except::of(sender));
        }
        for (user, kind) in &fx.cancelled {
            shared.timers.cancel(room_id, user, *kind);
        }
        for timer in fx.timers {
            shared.timers.schedule(room_id, timer);
        }
        if fx.destroyed {
            shared.timers.cancel_room(room_id);
            fanout.drop_room(room_id);
        }
        if self.staff_batch.len() >= STAFF_BATCH_MAX {
            self.flush_staff_batch();
        }
        self.entry.set_member_count(self.room.member_count());
    }

    /// Sends the held staff events: to each owner or admin in the room, in one delivery, those
    /// that do not skip it.
    fn flush_staff_batch(&mut self) {
        if self.staff_batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.staff_batch);
        let record = self.room.record();
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
            self.shared.fanout.send_batch_to(session, items);
        }
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
        ctx: &mut Context<Self>,
    ) -> Result<Replied, ChatError> {
        let user = session.user().clone();
        let joiner = session.clone();
        let commit = self.execute(Command::Join { user: user.clone() }, Some(session), ctx)?;
        let replay = self.shared.limits.join_replay_count;
        let recent: Vec<ClientEvent> = self
            .recent
            .newest(replay)
            .into_iter()
            .map(ClientEvent::Message)
            .collect();
        self.shared.fanout.send_to(joiner, recent);
        // The session was offline when it entered (a user joining without a live client): it
        // starts its grace period now. Later changes reach the room as `SetPresence`.
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
        Ok(Replied {
            reply: RoomReply::Room(self.room.snapshot(Some(&user))),
            commit,
        })
    }
}

impl Actor for RoomActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let room_id = self.room.id();
        let initial = std::mem::take(&mut self.initial);
        let from = self.room.last_seq() + 1;
        // Members added at creation without a client are offline from the room's creation; a
        // restarted room's members offline since before it restarted, from when they left.
        let mut offline = Vec::new();
        for session in &initial {
            if let Some(since) = session.entered(room_id, from) {
                let since = if self.recovered {
                    since.max(self.room.record().created_at)
                } else {
                    since.max(self.started_at)
                };
                offline.push((session.user().clone(), since));
            }
            self.shared.fanout.add(room_id, session.clone());
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
        if self.recovered {
            // The previous actor died: tell the members (restored from their sessions) where the
            // room's messages stand, so they can fetch what they may have missed.
            let event = ChatRoomEvent::ChatRoomRecovered {
                room_id,
                last_seq: self.room.last_seq(),
            };
            self.shared
                .fanout
                .broadcast(room_id, ClientEvent::Room(Arc::new(event)), Except::NONE);
        }
        self.entry.set_member_count(self.room.member_count());
        tracing::debug!(room = %room_id, "room actor started");
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.exit.clean = !self.poisoned;
    }
}

impl Handler<RoomCall> for RoomActor {
    type Result = Result<Replied, ChatError>;

    fn handle(&mut self, RoomCall(op): RoomCall, ctx: &mut Context<Self>) -> Self::Result {
        let room = self.room.id();
        self.guarded(ctx, |act, ctx| act.call(op, ctx))
            .map(|result| {
                result.map(|mut replied| {
                    // Every successful call waits until every write made so far is durable, not
                    // only its own: a call that found its change already made (by a racing call
                    // or its own earlier try) or a read must not report state that a crash can
                    // still take back. Free when nothing is waiting to be flushed.
                    if replied.commit.is_none() {
                        replied.commit = Some(self.store.commit());
                    }
                    replied
                })
            })
            .unwrap_or_else(|| {
                Err(ChatError::RoomUnavailable(format!(
                    "room {room} failed on this call and is restarting"
                )))
            })
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

    fn call(&mut self, op: RoomOp, ctx: &mut Context<Self>) -> Result<Replied, ChatError> {
        let done = |commit| Replied {
            reply: RoomReply::Done,
            commit,
        };
        match op {
            RoomOp::Join {
                session,
                reservation,
            } => {
                let replied = self.join(session, ctx);
                drop(reservation);
                replied
            }
            RoomOp::Leave {
                user,
                owner_may_leave,
            } => {
                let command = Command::Leave {
                    user,
                    owner_may_leave,
                };
                self.execute(command, None, ctx).map(done)
            }
            RoomOp::Destroy { user } => {
                let commit = self.execute(Command::Destroy { user }, None, ctx)?;
                self.entry.mark_destroyed();
                ctx.stop();
                Ok(done(commit))
            }
            RoomOp::Info { viewer } => Ok(Replied {
                reply: RoomReply::Room(self.room.snapshot(Some(&viewer))),
                commit: None,
            }),
            RoomOp::Send {
                except,
                from,
                message,
                msg_id,
            } => {
                let now = self.now();
                let command = Command::SendMessage {
                    from,
                    message,
                    msg_id,
                    now,
                };
                let (commit, _, sent) = self.execute_full(command, None, except, ctx)?;
                match sent {
                    Some(message) => Ok(Replied {
                        reply: RoomReply::Message(message),
                        commit,
                    }),
                    None => Err(ChatError::General("the room accepted no message".into())),
                }
            }
            RoomOp::History { viewer, query } => {
                if !self.room.is_member(&viewer) {
                    return Err(ChatError::NotJoined(viewer.to_string()));
                }
                let page = self.history_page(query)?;
                Ok(Replied {
                    reply: RoomReply::History(page),
                    commit: None,
                })
            }
            RoomOp::Apply(command) => {
                let (commit, failures) = self.execute_with_failures(command, None, ctx)?;
                Ok(Replied {
                    reply: RoomReply::Failures(failures),
                    commit,
                })
            }
            RoomOp::Query { viewer, query } => Ok(Replied {
                reply: RoomReply::Answer(self.answer(&viewer, query)?),
                commit: None,
            }),
            #[cfg(feature = "fault-injection")]
            RoomOp::Panic => panic!("injected fault in room {}", self.room.id()),
            RoomOp::Stats => Ok(Replied {
                reply: RoomReply::Stats(RoomStats {
                    room_id: self.room.id(),
                    member_count: self.room.member_count(),
                    online_count: self
                        .room
                        .members()
                        .iter()
                        .filter(|u| self.shared.session_of(u).is_some_and(|s| s.is_online()))
                        .count(),
                    last_seq: self.room.last_seq(),
                    retained: self
                        .store
                        .message_bounds(self.room.id())
                        .map_err(storage_error)?
                        .map_or(0, |(first, last)| (last + 1 - first) as usize),
                    messages: self.room.stats(),
                }),
                commit: None,
            }),
        }
    }
}

impl Handler<PresenceChanged> for RoomActor {
    type Result = ();

    fn handle(&mut self, msg: PresenceChanged, ctx: &mut Context<Self>) {
        let Some(offline_since) = msg.session.take_room_notice(self.room.id()) else {
            return;
        };
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

impl Handler<ExpireOffline> for RoomActor {
    type Result = ();

    fn handle(&mut self, msg: ExpireOffline, ctx: &mut Context<Self>) {
        let now = self.now();
        // The session owns the presence; the room's view is a cache of it. A member whose
        // session is online now is never removed, whatever the room last heard.
        let online = self
            .shared
            .session_of(&msg.user)
            .is_some_and(|s| s.is_online());
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
        self.guarded(ctx, |act, ctx| act.presence(command, ctx));
    }
}
