//! A user's session: its mailbox, presence, rooms, handlers and event streams, and the
//! dispatcher that feeds them.
//!
//! Every delivery for a user lands in the session's one mailbox. One dispatcher task per session
//! (started when the first handler or stream is registered) drains it in batches on the engine's
//! callback runtime and hands each event to every registered handler, then to every open stream.
//! So handlers never run on a room actor or a fan-out shard, and one slow or panicking handler
//! delays only its own session.

use std::cell::Cell;
use std::collections::{HashSet, VecDeque};
use std::future::poll_fn;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_core::Stream;
use parking_lot::{Mutex, RwLock};
use roomcast_model::{ChatMessage, ChatRoomEvent, RoomId, UserId};

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

struct HandlerEntry<H: ?Sized> {
    id: String,
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
            tracing::warn!(handler = %self.id, "an event handler panicked; it missed this event");
        }
    }
}

/// Handlers by id, copy-on-write so the dispatcher takes a snapshot per batch without holding
/// the lock while handlers run.
struct Registry<H: ?Sized> {
    entries: Mutex<Arc<[Arc<HandlerEntry<H>>]>>,
}

impl<H: ?Sized> Default for Registry<H> {
    fn default() -> Self {
        Registry {
            entries: Mutex::new(Arc::from(Vec::new())),
        }
    }
}

impl<H: ?Sized> Registry<H> {
    fn snapshot(&self) -> Arc<[Arc<HandlerEntry<H>>]> {
        self.entries.lock().clone()
    }

    /// Adds `handler` under `id`; returns the entry it replaced.
    fn add(&self, id: String, handler: Arc<H>) -> Option<Arc<HandlerEntry<H>>> {
        let entry = Arc::new(HandlerEntry {
            id,
            handler,
            alive: AtomicBool::new(true),
            gate: RwLock::new(()),
        });
        let mut entries = self.entries.lock();
        let replaced = entries.iter().find(|h| h.id == entry.id).cloned();
        let mut next: Vec<_> = entries
            .iter()
            .filter(|h| h.id != entry.id)
            .cloned()
            .collect();
        next.push(entry);
        *entries = next.into();
        replaced
    }

    fn remove(&self, id: &str) -> Option<Arc<HandlerEntry<H>>> {
        let mut entries = self.entries.lock();
        let found = entries.iter().find(|h| h.id == id).cloned();
        if found.is_some() {
            let next: Vec<_> = entries.iter().filter(|h| h.id != id).cloned().collect();
            *entries = next.into();
        }
        found
    }
}

/// What the dispatcher feeds: shared by the session and its dispatcher task.
#[derive(Default)]
struct Subscribers {
    room_handlers: Registry<dyn ChatRoomEventHandler>,
    chat_handlers: Registry<dyn ChatEventHandler>,
    streams: Mutex<Vec<Arc<Mailbox>>>,
}

#[derive(Default)]
struct Presence {
    /// Live `ChatClient` handles of this user.
    clients: usize,
    /// Set by an explicit disconnect, cleared by reconnect.
    disconnected: bool,
}

impl Presence {
    fn online(&self) -> bool {
        self.clients > 0 && !self.disconnected
    }
}

/// A user's session. Shared by every `ChatClient` of that user and by the rooms it is in.
pub struct Session {
    user: UserId,
    mailbox: Arc<Mailbox>,
    subscribers: Arc<Subscribers>,
    stream_capacity: usize,
    dispatcher_started: AtomicBool,
    runtime: tokio::runtime::Handle,
    presence: Mutex<Presence>,
    rooms: Mutex<HashSet<RoomId>>,
}

impl Session {
    pub(crate) fn new(
        user: UserId,
        capacity: usize,
        runtime: tokio::runtime::Handle,
    ) -> Arc<Session> {
        let mailbox = Mailbox::for_session(capacity);
        // A session starts offline (no client yet: e.g. a member added at creation).
        mailbox.set_online(false);
        Arc::new(Session {
            user,
            mailbox: Arc::new(mailbox),
            subscribers: Arc::default(),
            stream_capacity: capacity,
            dispatcher_started: AtomicBool::new(false),
            runtime,
            presence: Mutex::new(Presence::default()),
            rooms: Mutex::new(HashSet::new()),
        })
    }

    /// The session's user.
    pub fn user(&self) -> &UserId {
        &self.user
    }

    pub(crate) fn mailbox(&self) -> &Arc<Mailbox> {
        &self.mailbox
    }

    /// True if the session is online (has a client and is not disconnected).
    pub fn is_online(&self) -> bool {
        self.presence.lock().online()
    }

    /// Applies `change` to the presence; returns the new online state if it changed. The
    /// caller passes the change on to the mailbox through its fan-out shard, so that it takes
    /// effect in order with the deliveries.
    fn change_presence(&self, change: impl FnOnce(&mut Presence)) -> Option<bool> {
        let mut presence = self.presence.lock();
        let before = presence.online();
        change(&mut presence);
        let after = presence.online();
        (before != after).then_some(after)
    }

    /// A client of this user appeared; `Some(true)` if the session came online.
    pub(crate) fn client_opened(&self) -> Option<bool> {
        self.change_presence(|p| p.clients += 1)
    }

    /// A client of this user was dropped; `Some(false)` if the session went offline.
    pub(crate) fn client_closed(&self) -> Option<bool> {
        self.change_presence(|p| p.clients = p.clients.saturating_sub(1))
    }

    /// Disconnects (`false`) or reconnects (`true`); the new state if it changed.
    pub(crate) fn set_connected(&self, connected: bool) -> Option<bool> {
        self.change_presence(|p| p.disconnected = !connected)
    }

    /// The rooms this user is in.
    pub fn rooms(&self) -> Vec<RoomId> {
        self.rooms.lock().iter().copied().collect()
    }

    pub(crate) fn entered(&self, room: RoomId) {
        self.rooms.lock().insert(room);
    }

    pub(crate) fn exited(&self, room: RoomId) {
        self.rooms.lock().remove(&room);
    }

    /// Registers a chat-room event handler under `id`, replacing any with the same id.
    pub fn add_room_handler(&self, id: String, handler: Arc<dyn ChatRoomEventHandler>) {
        if let Some(old) = self.subscribers.room_handlers.add(id, handler) {
            self.retire(&old);
        }
        self.ensure_dispatcher();
    }

    /// Removes the chat-room event handler under `id`; true if there was one. Once this returns,
    /// the handler is not called again (a call already running finishes first, unless the
    /// handler is removing itself from inside that call).
    pub fn remove_room_handler(&self, id: &str) -> bool {
        self.subscribers
            .room_handlers
            .remove(id)
            .map(|e| self.retire(&e))
            .is_some()
    }

    /// Registers a message handler under `id`, replacing any with the same id.
    pub fn add_chat_handler(&self, id: String, handler: Arc<dyn ChatEventHandler>) {
        if let Some(old) = self.subscribers.chat_handlers.add(id, handler) {
            self.retire(&old);
        }
        self.ensure_dispatcher();
    }

    /// Removes the message handler under `id`, as [`Session::remove_room_handler`].
    pub fn remove_chat_handler(&self, id: &str) -> bool {
        self.subscribers
            .chat_handlers
            .remove(id)
            .map(|e| self.retire(&e))
            .is_some()
    }

    fn retire<H: ?Sized>(&self, entry: &HandlerEntry<H>) {
        entry.alive.store(false, Ordering::SeqCst);
        if DISPATCHING.with(Cell::get) != self.mailbox.id() {
            drop(entry.gate.write());
        }
    }

    /// A new stream of this session's events, from now on.
    pub fn events(&self) -> EventStream {
        let mailbox = Arc::new(Mailbox::new(self.stream_capacity));
        if self.mailbox.is_closed() {
            mailbox.close();
        } else {
            self.subscribers.streams.lock().push(mailbox.clone());
            self.ensure_dispatcher();
        }
        EventStream { mailbox }
    }

    /// Ends the session's deliveries: the dispatcher stops and every stream ends.
    pub(crate) fn close(&self) {
        self.mailbox.close();
        for s in self.subscribers.streams.lock().drain(..) {
            s.close();
        }
    }

    fn ensure_dispatcher(&self) {
        if self.dispatcher_started.swap(true, Ordering::SeqCst) {
            return;
        }
        let mailbox = self.mailbox.clone();
        let subscribers = self.subscribers.clone();
        // The task holds the mailbox and the subscribers, not the session: it ends when the
        // mailbox is closed (engine stopped).
        drop(
            self.runtime
                .spawn(run_dispatcher(mailbox.clone(), subscribers)),
        );
        mailbox.set_consumed();
    }
}

async fn run_dispatcher(mailbox: Arc<Mailbox>, subscribers: Arc<Subscribers>) {
    let id = mailbox.id();
    let mut batch = VecDeque::new();
    let mut messages: Vec<ChatMessage> = Vec::new();
    while let Some(missed) = poll_fn(|cx| mailbox.poll_drain(cx, &mut batch)).await {
        let room_handlers = subscribers.room_handlers.snapshot();
        let chat_handlers = subscribers.chat_handlers.snapshot();
        let mut streams = subscribers.streams.lock().clone();
        if missed > 0 {
            tracing::warn!(
                missed,
                "a client's event queue overflowed; its oldest events were dropped"
            );
            for h in chat_handlers.iter() {
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
            match &item {
                ClientEvent::Message(m) => messages.push(m.clone()),
                ClientEvent::Room(event) => {
                    flush(&mut messages);
                    for h in room_handlers.iter() {
                        h.call(id, |h| dispatch(h, event));
                    }
                }
                ClientEvent::Missed { .. } => {}
            }
            if !streams.is_empty() {
                streams.retain(|s| s.push(item.clone()));
            }
        }
        flush(&mut messages);
        subscribers.streams.lock().retain(|s| !s.is_closed());
    }
    for s in subscribers.streams.lock().drain(..) {
        s.close();
    }
}

/// A `Stream` of one client's events. Ends when the engine stops.
///
/// It is bounded: if it is not polled and falls behind, it drops its oldest events and yields
/// [`ClientEvent::Missed`] with their count before the next event.
pub struct EventStream {
    mailbox: Arc<Mailbox>,
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

impl Drop for EventStream {
    fn drop(&mut self) {
        self.mailbox.close();
    }
}
