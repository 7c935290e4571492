//! A user's session: its mailbox, presence, rooms, handlers and event streams, and the
//! dispatcher that feeds them.
//!
//! Every delivery for a user lands in the session's one mailbox. Once the first handler or stream
//! is registered, the dispatch pool (see `dispatch.rs`) drains it in batches and hands each event
//! to every registered handler, then to every open stream. So handlers never run on a room actor
//! or a fan-out shard, and a panicking handler is contained.

use std::cell::Cell;
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_core::Stream;
use parking_lot::{Mutex, RwLock};
use roomcast_model::{ChatError, ChatMessage, ChatRoomEvent, RoomId, Timestamp, UserId};

use crate::dispatch::DispatchPool;
use crate::handler::{dispatch, ChatEventHandler, ChatRoomEventHandler};
use crate::mailbox::{Mailbox, Received};

/// One event as a client's [`EventStream`] yields it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ClientEvent {
    /// A chat-room event (the same ones the room handlers get).
    Room(Arc<ChatRoomEvent>),
    /// A message (the same ones the chat handlers get).
    Message(ChatMessage),
    /// The stream fell behind and its `count` oldest events were dropped. Messages can be
    /// fetched again from history (from the last sequence number seen); room state from the
    /// room's info.
    Missed {
        /// How many events were dropped.
        count: u64,
    },
}

thread_local! {
    /// The mailbox id of the session whose handler is running on this thread, if any.
    static DISPATCHING: Cell<u64> = const { Cell::new(0) };
}

/// A handler's id: held inline when short (as ids are: "chat", "room-events"), so that a
/// registration is one allocation less per user.
#[derive(PartialEq, Eq)]
enum HandlerId {
    Inline { len: u8, bytes: [u8; 23] },
    Heap(Box<str>),
}

impl HandlerId {
    fn new(id: String) -> HandlerId {
        if id.len() <= 23 {
            let mut bytes = [0; 23];
            bytes[..id.len()].copy_from_slice(id.as_bytes());
            HandlerId::Inline {
                len: id.len() as u8,
                bytes,
            }
        } else {
            HandlerId::Heap(id.into_boxed_str())
        }
    }

    fn as_str(&self) -> &str {
        match self {
            // The bytes are a prefix of a `String`'s, cut at its length: valid UTF-8.
            HandlerId::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..*len as usize]).unwrap_or_default()
            }
            HandlerId::Heap(s) => s,
        }
    }
}

struct HandlerEntry<H: ?Sized> {
    id: HandlerId,
    /// The client that registered it (see [`Session::release_client`]).
    client: u64,
    handler: Arc<H>,
    alive: AtomicBool,
    /// Held for reading while the handler runs; `remove` takes it for writing to wait out a
    /// call in progress, so that after `remove` returns the handler is never called again.
    gate: RwLock<()>,
}

impl<H: ?Sized> HandlerEntry<H> {
    fn call(&self, mailbox_id: u64, f: impl FnOnce(&H)) {
        let _gate = self.gate.read();
        if !self.alive.load(Ordering::SeqCst) {
            return;
        }
        DISPATCHING.with(|d| d.set(mailbox_id));
        let result = catch_unwind(AssertUnwindSafe(|| f(&self.handler)));
        DISPATCHING.with(|d| d.set(0));
        if result.is_err() {
            tracing::warn!(handler = %self.id.as_str(), "an event handler panicked; it missed this event");
        }
    }
}

type Entries<H> = Arc<[Arc<HandlerEntry<H>>]>;

/// Handlers by id, copy-on-write so the dispatcher takes a snapshot per batch without holding
/// the lock while handlers run. `None` while empty, so that a session without handlers
/// allocates nothing here.
struct Registry<H: ?Sized> {
    entries: Mutex<Option<Entries<H>>>,
}

impl<H: ?Sized> Default for Registry<H> {
    fn default() -> Self {
        Registry {
            entries: Mutex::new(None),
        }
    }
}

impl<H: ?Sized> Registry<H> {
    fn snapshot(&self) -> Option<Entries<H>> {
        self.entries.lock().clone()
    }

    fn set(entries: &mut Option<Entries<H>>, next: Vec<Arc<HandlerEntry<H>>>) {
        *entries = (!next.is_empty()).then(|| next.into());
    }

    /// Adds `handler` under `id`; returns the entry it replaced.
    fn add(&self, id: String, handler: Arc<H>, client: u64) -> Option<Arc<HandlerEntry<H>>> {
        let entry = Arc::new(HandlerEntry {
            id: HandlerId::new(id),
            client,
            handler,
            alive: AtomicBool::new(true),
            gate: RwLock::new(()),
        });
        let mut entries = self.entries.lock();
        let current = entries.as_deref().unwrap_or_default();
        let replaced = current.iter().find(|h| h.id == entry.id).cloned();
        let mut next: Vec<_> = current
            .iter()
            .filter(|h| h.id != entry.id)
            .cloned()
            .collect();
        next.push(entry);
        Self::set(&mut entries, next);
        replaced
    }

    /// Removes every handler; returns them.
    fn clear(&self) -> Vec<Arc<HandlerEntry<H>>> {
        self.entries
            .lock()
            .take()
            .map(|e| e.to_vec())
            .unwrap_or_default()
    }

    /// Removes the handlers `client` registered; returns them.
    fn remove_client(&self, client: u64) -> Vec<Arc<HandlerEntry<H>>> {
        let mut entries = self.entries.lock();
        let current = entries.as_deref().unwrap_or_default();
        let (gone, kept): (Vec<_>, Vec<_>) =
            current.iter().cloned().partition(|h| h.client == client);
        if !gone.is_empty() {
            Self::set(&mut entries, kept);
        }
        gone
    }

    fn remove(&self, id: &str) -> Option<Arc<HandlerEntry<H>>> {
        let mut entries = self.entries.lock();
        let current = entries.as_deref().unwrap_or_default();
        let found = current.iter().find(|h| h.id.as_str() == id).cloned();
        if found.is_some() {
            let next: Vec<_> = current
                .iter()
                .filter(|h| h.id.as_str() != id)
                .cloned()
                .collect();
            Self::set(&mut entries, next);
        }
        found
    }
}

/// What a session knows of itself, under one lock. The session is the one owner of its
/// presence: its mailbox and its rooms are told *that* it changed (at most one notice pending
/// each) and read the state itself when they handle the notice, so they always end on the
/// latest state whatever order changes raced in, and a user flapping on and off costs each room
/// one message per notice it handles, not one per change.
#[derive(Default)]
struct State {
    /// Live `ChatClient` handles of this user.
    clients: u32,
    /// Set by an explicit disconnect, cleared by reconnect.
    disconnected: bool,
    /// When the session last went offline (engine clock).
    offline_since: Timestamp,
    /// The rooms the user is in (a few, so a vector).
    rooms: Vec<RoomSlot>,
    /// Joins in flight, by room, with how many calls wait on each (`None`: rooms being created
    /// with the user in them, each counted): they count against the rooms-per-user limit until
    /// the room has answered (see [`RoomReservation`]).
    pending: Vec<(Option<RoomId>, u32)>,
}

/// A room the user is in.
struct RoomSlot {
    room: RoomId,
    /// The sequence number the user's local copy of the room starts at (see
    /// `Core::load_local_messages`).
    copy_from: u64,
    /// A presence notice is on its way to the room.
    notice: bool,
    /// Cluster mode: see [`Session::room_mark`].
    mark: Option<(u64, u64)>,
}

/// Who must be told that a session's presence changed (see [`State`]).
pub(crate) struct PresenceNotices {
    /// These rooms.
    pub(crate) rooms: Vec<RoomId>,
}

impl State {
    fn slot(&mut self, room: RoomId) -> Option<&mut RoomSlot> {
        self.rooms.iter_mut().find(|s| s.room == room)
    }

    fn online(&self) -> bool {
        self.clients > 0 && !self.disconnected
    }

    /// Rooms the user is in, is joining, or is being put in by a room's creation.
    fn counted_rooms(&self) -> usize {
        self.rooms.len()
            + self
                .pending
                .iter()
                .map(|(p, n)| match p {
                    None => *n as usize,
                    Some(p) => usize::from(!self.rooms.iter().any(|s| s.room == *p)),
                })
                .sum::<usize>()
    }
}

/// A place held for one join against the rooms-per-user limit. It travels with the join to the
/// room's actor and is released when dropped: after the room has admitted the user (who then
/// counts as in the room) or refused it, or if the call never reached the room. So concurrent
/// joins by one user can never pass the limit together.
pub(crate) struct RoomReservation {
    session: Arc<Session>,
    room: Option<RoomId>,
    /// Turned into a room of the session by [`Session::entered`]: nothing left to release.
    used: bool,
}

impl RoomReservation {
    /// Whose place this holds.
    pub(crate) fn session(&self) -> &Arc<Session> {
        &self.session
    }
}

impl State {
    fn release(&mut self, room: Option<RoomId>) {
        if let Some(at) = self.pending.iter().position(|(r, _)| *r == room) {
            let (_, n) = &mut self.pending[at];
            *n -= 1;
            if *n == 0 {
                self.pending.swap_remove(at);
                if self.pending.is_empty() {
                    // Joins in flight are rare and short: an idle member keeps no buffer.
                    self.pending = Vec::new();
                }
            }
        }
    }
}

impl Drop for RoomReservation {
    fn drop(&mut self) {
        if !self.used {
            self.session.state.lock().release(self.room);
        }
    }
}

/// A user's session. Shared by every `ChatClient` of that user and by the rooms it is in.
pub struct Session {
    user: UserId,
    /// Inline, not behind its own `Arc`: shards and rooms hold the session.
    mailbox: Mailbox,
    room_handlers: Registry<dyn ChatRoomEventHandler>,
    chat_handlers: Registry<dyn ChatEventHandler>,
    /// Open event streams; boxed because most sessions have none (8 bytes against 24).
    #[allow(clippy::box_collection)]
    streams: Mutex<Option<Box<Vec<Arc<Mailbox>>>>>,
    /// True once a stream was opened, so that dispatching a batch of a session without streams
    /// takes no lock for them.
    has_streams: AtomicBool,
    attached: AtomicBool,
    pool: Arc<DispatchPool>,
    /// Presence, rooms and joins in flight (see [`State`]).
    state: Mutex<State>,
    /// `ChatOptions::delete_messages_on_exit` of the user's latest login.
    delete_on_exit: AtomicBool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("user", &self.user)
            .field("online", &self.is_online())
            .finish_non_exhaustive()
    }
}

impl Session {
    pub(crate) fn new(user: UserId, capacity: usize, pool: Arc<DispatchPool>) -> Arc<Session> {
        let mailbox = Mailbox::for_session(capacity);
        // A session starts offline (no client yet: e.g. a member added at creation).
        mailbox.set_online(false);
        Arc::new(Session {
            user,
            mailbox,
            room_handlers: Registry::default(),
            chat_handlers: Registry::default(),
            streams: Mutex::new(None),
            has_streams: AtomicBool::new(false),
            attached: AtomicBool::new(false),
            pool,
            state: Mutex::new(State::default()),
            delete_on_exit: AtomicBool::new(true),
        })
    }

    /// Whether the user's local copy of a room's messages is deleted when it leaves the room.
    pub fn deletes_messages_on_exit(&self) -> bool {
        self.delete_on_exit.load(Ordering::Relaxed)
    }

    pub(crate) fn set_delete_on_exit(&self, delete: bool) {
        self.delete_on_exit.store(delete, Ordering::Relaxed);
    }

    /// The session's user.
    pub fn user(&self) -> &UserId {
        &self.user
    }

    pub(crate) fn pool(&self) -> &DispatchPool {
        &self.pool
    }

    pub(crate) fn mailbox(&self) -> &Mailbox {
        &self.mailbox
    }

    /// True if the session is online (has a client and is not disconnected).
    pub fn is_online(&self) -> bool {
        self.state.lock().online()
    }

    /// Applies `change` to the presence at `now`. If the online state changed, returns who must
    /// be told: those not told already of an earlier change they have not handled yet.
    fn change_presence(
        &self,
        now: Timestamp,
        change: impl FnOnce(&mut State),
    ) -> Option<PresenceNotices> {
        let mut state = self.state.lock();
        let before = state.online();
        change(&mut state);
        let after = state.online();
        if before == after {
            return None;
        }
        if !after {
            state.offline_since = now;
        }
        // The mailbox takes the change at once, under the session's lock: once `disconnect()`
        // (or the last client's drop) returns nothing more is pushed, and once `reconnect()` (or
        // a login) returns what rooms send is pushed. What rooms sent before coming back online
        // is not, however late its shard delivers it (see `mailbox::ticket`).
        self.mailbox.set_online(after);
        let rooms = state
            .rooms
            .iter_mut()
            .filter_map(|s| (!std::mem::replace(&mut s.notice, true)).then_some(s.room))
            .collect();
        Some(PresenceNotices { rooms })
    }

    /// A client of this user appeared (a login): the user is connected again, whatever an
    /// earlier client's `disconnect` said; who to tell if the session came online.
    pub(crate) fn client_opened(&self, now: Timestamp) -> Option<PresenceNotices> {
        self.change_presence(now, |p| {
            p.clients += 1;
            p.disconnected = false;
        })
    }

    /// A client of this user was dropped; who to tell if the session went offline.
    pub(crate) fn client_closed(&self, now: Timestamp) -> Option<PresenceNotices> {
        self.change_presence(now, |p| p.clients = p.clients.saturating_sub(1))
    }

    /// Disconnects (`false`) or reconnects (`true`); who to tell if the state changed.
    pub(crate) fn set_connected(&self, connected: bool, now: Timestamp) -> Option<PresenceNotices> {
        self.change_presence(now, |p| p.disconnected = !connected)
    }

    /// `room` handles its notice: `Some(None)` if the session is online now, `Some(Some(since))`
    /// if it has been offline since then, `None` if the user is not in the room.
    pub(crate) fn take_room_notice(&self, room: RoomId) -> Option<Option<Timestamp>> {
        let mut state = self.state.lock();
        let online = state.online();
        let since = state.offline_since;
        let slot = state.slot(room)?;
        slot.notice = false;
        Some((!online).then_some(since))
    }

    /// The session's presence as `room` sees it, if the user is in it: `None` online,
    /// `Some(since)` offline since then (cluster mode: told to the room's owning node).
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn room_presence(&self, room: RoomId) -> Option<Option<Timestamp>> {
        let mut state = self.state.lock();
        let online = state.online();
        let since = state.offline_since;
        state.slot(room)?;
        Some((!online).then_some(since))
    }

    /// Offline since then (`None`: online).
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn offline_since(&self) -> Option<Timestamp> {
        let state = self.state.lock();
        (!state.online()).then_some(state.offline_since)
    }

    /// The rooms this user is in.
    pub fn rooms(&self) -> Vec<RoomId> {
        self.state.lock().rooms.iter().map(|s| s.room).collect()
    }

    /// How many rooms the user is in.
    pub fn room_count(&self) -> usize {
        self.state.lock().rooms.len()
    }

    /// True if the user is in `room`.
    pub fn is_in(&self, room: RoomId) -> bool {
        self.state.lock().rooms.iter().any(|s| s.room == room)
    }

    /// Holds a place for a join of `room` (`None`: a room being created with the user in it)
    /// against the limit of `max` rooms (code 4 beyond). `Ok(None)` if the user is in the room
    /// already (the room answers 701).
    pub(crate) fn reserve_room(
        self: &Arc<Self>,
        room: Option<RoomId>,
        max: usize,
    ) -> Result<Option<RoomReservation>, ChatError> {
        let mut state = self.state.lock();
        if room.is_some_and(|room| state.rooms.iter().any(|s| s.room == room)) {
            return Ok(None);
        }
        if let Some((_, n)) = state
            .pending
            .iter_mut()
            .find(|(r, _)| room.is_some() && *r == room)
        {
            // Another join of the same room is in flight: it holds the place; the room admits
            // one of them and answers 701 to the other.
            *n += 1;
        } else {
            if state.counted_rooms() >= max {
                return Err(ChatError::ExceedServiceLimit(format!(
                    "{} may be in at most {max} rooms at once",
                    self.user
                )));
            }
            match state
                .pending
                .iter_mut()
                .find(|(r, _)| r.is_none() && room.is_none())
            {
                Some((_, n)) => *n += 1,
                None => state.pending.push((room, 1)),
            }
        }
        Ok(Some(RoomReservation {
            session: self.clone(),
            room,
            used: false,
        }))
    }

    /// Where this membership's part of the local copy of `room` starts, if the user is in it.
    /// Cluster mode: where in `room`'s membership changes this session's membership was last
    /// confirmed (see [`roomcast_store::Departure::mark`]); `None` if never.
    pub(crate) fn room_mark(&self, room: RoomId) -> Option<(u64, u64)> {
        self.state.lock().slot(room).and_then(|s| s.mark)
    }

    /// Cluster mode: the room confirmed this session's membership at `mark` (kept if later
    /// than the one it had). `false` if the session is not in the room (yet).
    pub(crate) fn confirm_room_mark(&self, room: RoomId, mark: (u64, u64)) -> bool {
        match self.state.lock().slot(room) {
            Some(slot) => {
                slot.mark = Some(slot.mark.map_or(mark, |m| m.max(mark)));
                true
            }
            None => false,
        }
    }

    pub(crate) fn copy_start(&self, room: RoomId) -> Option<u64> {
        self.state.lock().slot(room).map(|s| s.copy_from)
    }

    /// The user entered `room` (or the room restarted with it), its local copy starting at
    /// `copy_from` (kept if it was in the room already). Returns the presence now: `None` if
    /// online, `Some(since)` if offline. The room applies it; any later change reaches the room
    /// as a notice.
    ///
    /// `reservation`, this session's place held for the room, becomes the room itself under the
    /// same lock: the user is counted once, never twice, never not at all.
    pub(crate) fn entered(
        &self,
        room: RoomId,
        copy_from: u64,
        reservation: Option<&mut RoomReservation>,
    ) -> Option<Timestamp> {
        let mut state = self.state.lock();
        if let Some(r) = reservation {
            if !r.used && std::ptr::eq(Arc::as_ptr(&r.session), self) {
                state.release(r.room);
                r.used = true;
            }
        }
        match state.slot(room) {
            // The room reads the state now: a notice still on its way adds nothing.
            Some(slot) => slot.notice = false,
            None => {
                // Most users are in one room: grow one slot at a time, not by four.
                state.rooms.reserve_exact(1);
                state.rooms.push(RoomSlot {
                    room,
                    copy_from,
                    notice: false,
                    mark: None,
                });
            }
        }
        (!state.online()).then_some(state.offline_since)
    }

    pub(crate) fn exited(&self, room: RoomId) {
        self.state.lock().rooms.retain(|s| s.room != room);
    }

    /// Registers a chat-room event handler under `id` for `client`, replacing any with the same
    /// id.
    pub fn add_room_handler(
        self: &Arc<Self>,
        id: String,
        handler: Arc<dyn ChatRoomEventHandler>,
        client: u64,
    ) {
        if let Some(old) = self.room_handlers.add(id, handler, client) {
            self.retire(&old);
        }
        self.attach();
    }

    /// Removes the chat-room event handler under `id`; true if there was one. Once this returns,
    /// the handler is not called again (a call already running finishes first, unless the
    /// handler is removing itself from inside that call).
    pub fn remove_room_handler(&self, id: &str) -> bool {
        self.room_handlers
            .remove(id)
            .map(|e| self.retire(&e))
            .is_some()
    }

    /// Registers a message handler under `id` for `client`, replacing any with the same id.
    pub fn add_chat_handler(
        self: &Arc<Self>,
        id: String,
        handler: Arc<dyn ChatEventHandler>,
        client: u64,
    ) {
        if let Some(old) = self.chat_handlers.add(id, handler, client) {
            self.retire(&old);
        }
        self.attach();
    }

    /// Removes the message handler under `id`, as [`Session::remove_room_handler`].
    pub fn remove_chat_handler(&self, id: &str) -> bool {
        self.chat_handlers
            .remove(id)
            .map(|e| self.retire(&e))
            .is_some()
    }

    /// A client logged out: the handlers it registered are removed (as by `remove_*_handler`);
    /// those of the user's other clients stay.
    pub fn release_client(&self, client: u64) {
        for e in self.room_handlers.remove_client(client) {
            self.retire(&e);
        }
        for e in self.chat_handlers.remove_client(client) {
            self.retire(&e);
        }
    }

    fn retire<H: ?Sized>(&self, entry: &HandlerEntry<H>) {
        entry.alive.store(false, Ordering::SeqCst);
        // Outside the dispatch pool, wait out a call in progress, so that the handler is never
        // called after `remove` returns. From inside any handler, do not wait: this thread may
        // hold this very gate (a handler removing itself), or another handler may be waiting
        // for this one's gate (two handlers removing each other), and waiting would stall the
        // pool. The handler is still never *started* again.
        if DISPATCHING.with(Cell::get) == 0 {
            drop(entry.gate.write());
        }
    }

    /// A new stream of this session's events, from now on.
    pub fn events(self: &Arc<Self>) -> EventStream {
        let mailbox = Arc::new(Mailbox::new(self.mailbox.capacity()));
        if self.mailbox.is_closed() {
            mailbox.close();
        } else {
            self.streams
                .lock()
                .get_or_insert_with(Default::default)
                .push(mailbox.clone());
            self.has_streams.store(true, Ordering::Release);
            self.attach();
        }
        EventStream { mailbox }
    }

    /// Ends the session's deliveries: dispatching stops, every stream ends, and the handlers are
    /// released (a handler may hold a client, and so the engine: releasing it breaks the cycle).
    pub(crate) fn close(&self) {
        self.mailbox.close();
        self.close_streams();
        for entry in self.room_handlers.clear() {
            entry.alive.store(false, Ordering::SeqCst);
        }
        for entry in self.chat_handlers.clear() {
            entry.alive.store(false, Ordering::SeqCst);
        }
    }

    pub(crate) fn close_streams(&self) {
        for s in self.streams.lock().take().into_iter().flat_map(|v| *v) {
            s.close();
        }
    }

    /// Starts dispatching the session's mailbox (once): from now on its events are handled.
    fn attach(self: &Arc<Self>) {
        if self.attached.swap(true, Ordering::SeqCst) {
            return;
        }
        self.mailbox.set_consumed();
        self.pool.attach(self);
    }

    /// Hands one drained batch to the handlers and streams, in order. Runs on a dispatch thread.
    pub(crate) fn dispatch(
        &self,
        missed: u64,
        batch: &mut VecDeque<ClientEvent>,
        messages: &mut Vec<ChatMessage>,
    ) {
        let id = self.mailbox.id();
        let room_handlers = self.room_handlers.snapshot();
        let room_handlers = room_handlers.as_deref().unwrap_or_default();
        let chat_handlers = self.chat_handlers.snapshot();
        let chat_handlers = chat_handlers.as_deref().unwrap_or_default();
        let with_streams = self.has_streams.load(Ordering::Acquire);
        let mut streams: Vec<Arc<Mailbox>> = if with_streams {
            self.streams.lock().as_deref().cloned().unwrap_or_default()
        } else {
            Vec::new()
        };
        if missed > 0 {
            tracing::warn!(user = %self.user, missed, "a client's event queue overflowed; its oldest events were dropped");
            for h in chat_handlers.iter() {
                h.call(id, |h| h.on_events_missed(missed));
            }
            for h in room_handlers.iter() {
                h.call(id, |h| h.on_events_missed(missed));
            }
            for s in &streams {
                s.push_missed(missed);
            }
        }
        let flush = |messages: &mut Vec<ChatMessage>| {
            if !messages.is_empty() {
                for h in chat_handlers.iter() {
                    h.call(id, |h| h.on_messages_received(messages));
                }
                messages.clear();
            }
        };
        for item in batch.drain(..) {
            if !streams.is_empty() {
                streams.retain(|s| {
                    let pushed = s.push(item.clone());
                    self.pool.count_overflow(pushed.dropped);
                    pushed.open
                });
            }
            // Moved, not cloned: one message delivered to many members is one `Arc`, and every
            // clone or drop of it is an atomic on a cache line all the members share.
            match item {
                ClientEvent::Message(m) => messages.push(m),
                ClientEvent::Room(event) => {
                    flush(messages);
                    if let ChatRoomEvent::MessageRecalled {
                        room_id,
                        msg_id,
                        operator,
                        ..
                    } = &*event
                    {
                        let ids = [*msg_id];
                        for h in chat_handlers.iter() {
                            h.call(id, |h| {
                                h.on_messages_recalled(room_id, &ids, operator.as_ref())
                            });
                        }
                    }
                    for h in room_handlers.iter() {
                        h.call(id, |h| dispatch(h, &event));
                    }
                }
                ClientEvent::Missed { .. } => {}
            }
        }
        flush(messages);
        if with_streams {
            let mut live = self.streams.lock();
            if let Some(all) = live.as_mut() {
                if streams.len() != all.len() {
                    all.retain(|s| !s.is_closed());
                }
            }
        }
    }
}

/// A `Stream` of one user's events: room events and messages, the same ones its handlers get,
/// in the same order. It is opened with `ChatClient::events` in the `roomcast` crate, whose
/// documentation has runnable examples of what follows.
///
/// # Lagging
///
/// A stream is bounded: it holds at most `EngineBuilder::event_queue_capacity` events (4,096 by
/// default) that have reached it and have not been read. When an event reaches a full stream,
/// the stream drops its oldest event, and its next item is [`ClientEvent::Missed`] with how many
/// it dropped since it last said so, before any further event. The user's own queue, which
/// feeds its handlers and streams, has the same capacity and drops its oldest events the same
/// way when they fall behind; those drops are added to every stream's `Missed` count. A stream
/// that lags never slows the room, the other members, or the user's other streams and handlers,
/// and `Engine::overflowed_deliveries` counts what was dropped.
///
/// # Closing
///
/// The stream ends (yields `None`), after yielding the events it holds:
/// - when the client that opened it logs out, or its last clone is dropped (a stream opened on
///   a logged-out client ends at once; `a_logged_out_client_gets_no_more_events_its_sibling_does`
///   and `a_dropped_client_s_streams_end_its_handlers_stay` in `tests/integration/presence.rs`);
/// - when the engine stops: on `Engine::shutdown`, or when the last `Engine` handle is dropped
///   (a stream opened after that ends at once;
///   `calls_after_shutdown_fail_with_900_and_shutdown_is_idempotent` in
///   `tests/integration/runtime.rs`).
///
/// Disconnecting the user (`ChatClient::disconnect`, or every client of it gone) stops
/// deliveries until it is back online: what the user's queue held is dropped, and what rooms
/// send meanwhile is never pushed, however late, except the notice that it was removed from a
/// room (see `tests/integration/presence.rs`). Events the stream already holds stay readable.
///
/// Dropping the stream stops deliveries to it; the user's other streams and handlers are not
/// affected.
pub struct EventStream {
    mailbox: Arc<Mailbox>,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream").finish_non_exhaustive()
    }
}

impl Stream for EventStream {
    type Item = ClientEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ClientEvent>> {
        self.mailbox.poll_recv(cx).map(|r| {
            r.map(|r| match r {
                Received::Missed(count) => ClientEvent::Missed { count },
                Received::Item(item) => item,
            })
        })
    }
}

impl EventStream {
    /// A handle that ends this stream from elsewhere (the facade ends a client's streams when
    /// it logs out). Not part of the API.
    #[doc(hidden)]
    pub fn closer(&self) -> StreamCloser {
        StreamCloser(Arc::downgrade(&self.mailbox))
    }
}

/// Ends an [`EventStream`] from elsewhere; see [`EventStream::closer`]. Not part of the API.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct StreamCloser(std::sync::Weak<Mailbox>);

impl StreamCloser {
    /// Ends the stream (it yields what it holds, then `None`); false if it had ended.
    pub fn close(&self) -> bool {
        match self.0.upgrade() {
            Some(m) if !m.is_closed() => {
                m.close();
                true
            }
            _ => false,
        }
    }

    /// True once the stream has ended or was dropped.
    pub fn is_closed(&self) -> bool {
        self.0.upgrade().is_none_or(|m| m.is_closed())
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.mailbox.close();
    }
}

#[cfg(test)]
mod handler_id_tests {
    use super::HandlerId;

    #[test]
    fn short_ids_are_inline_long_ones_on_the_heap_both_read_back() {
        for id in [
            "",
            "chat",
            "ünïcödé-händler",
            "exactly-23-bytes-long!!",
            "a-handler-id-longer-than-twenty-three",
        ] {
            let h = HandlerId::new(id.to_string());
            assert_eq!(h.as_str(), id);
            assert_eq!(
                matches!(h, HandlerId::Inline { .. }),
                id.len() <= 23,
                "{id}"
            );
            assert!(h == HandlerId::new(id.to_string()));
        }
    }
}
