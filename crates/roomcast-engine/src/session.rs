//! A user's session: its mailbox, its registered handlers, its event streams and the dispatcher
//! that feeds them.
//!
//! Every delivery for a user lands in the session's one mailbox. One dispatcher task per session
//! (started when the first handler or stream is registered) drains it in batches on the engine's
//! callback runtime and hands each event to every registered handler, then to every open stream.
//! So handlers never run on a room actor or a fan-out shard, and one slow or panicking handler
//! delays only its own session.

use std::cell::Cell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_core::Stream;
use parking_lot::{Mutex, RwLock};
use roomcast_model::{ChatRoomEvent, UserId};

use crate::handler::{dispatch, ChatRoomEventHandler};
use crate::mailbox::{Mailbox, Received};

/// One event as a client's [`EventStream`] yields it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ClientEvent {
    /// A chat-room event (the same ones the handlers get).
    Room(Arc<ChatRoomEvent>),
    /// The stream fell behind and its `count` oldest events were dropped. Whatever state they
    /// changed can be fetched again (room info, member list, history).
    Missed {
        /// How many events were dropped.
        count: u64,
    },
}

thread_local! {
    /// The mailbox id of the session whose handler is running on this thread, if any.
    static DISPATCHING: Cell<u64> = const { Cell::new(0) };
}

struct HandlerEntry {
    id: String,
    handler: Arc<dyn ChatRoomEventHandler>,
    alive: AtomicBool,
    /// Held for reading while the handler runs; `remove` takes it for writing to wait out a
    /// call in progress, so that after `remove` returns the handler is never called again.
    gate: RwLock<()>,
}

/// What the dispatcher feeds: shared by the session and its dispatcher task.
#[derive(Default)]
struct Subscribers {
    /// Copy-on-write, so the dispatcher takes a snapshot per batch without holding the lock.
    handlers: Mutex<Arc<[Arc<HandlerEntry>]>>,
    streams: Mutex<Vec<Arc<Mailbox>>>,
}

/// A user's session. Shared by every `ChatClient` of that user and by the rooms it is in.
pub struct Session {
    user: UserId,
    mailbox: Arc<Mailbox>,
    subscribers: Arc<Subscribers>,
    stream_capacity: usize,
    dispatcher_started: AtomicBool,
    runtime: tokio::runtime::Handle,
}

impl Session {
    pub(crate) fn new(
        user: UserId,
        capacity: usize,
        runtime: tokio::runtime::Handle,
    ) -> Arc<Session> {
        Arc::new(Session {
            user,
            mailbox: Arc::new(Mailbox::new(capacity)),
            subscribers: Arc::default(),
            stream_capacity: capacity,
            dispatcher_started: AtomicBool::new(false),
            runtime,
        })
    }

    /// The session's user.
    pub fn user(&self) -> &UserId {
        &self.user
    }

    pub(crate) fn mailbox(&self) -> &Arc<Mailbox> {
        &self.mailbox
    }

    /// Registers `handler` under `id`, replacing any handler registered under the same id.
    pub fn add_room_handler(&self, id: String, handler: Arc<dyn ChatRoomEventHandler>) {
        let entry = Arc::new(HandlerEntry {
            id,
            handler,
            alive: AtomicBool::new(true),
            gate: RwLock::new(()),
        });
        let replaced = {
            let mut handlers = self.subscribers.handlers.lock();
            let replaced = handlers.iter().find(|h| h.id == entry.id).cloned();
            let mut next: Vec<Arc<HandlerEntry>> = handlers
                .iter()
                .filter(|h| h.id != entry.id)
                .cloned()
                .collect();
            next.push(entry);
            *handlers = next.into();
            replaced
        };
        if let Some(old) = replaced {
            self.retire(&old);
        }
        self.ensure_dispatcher();
    }

    /// Removes the handler registered under `id`; true if there was one. Once this returns, the
    /// handler is not called again (a call already running finishes first, unless the handler is
    /// removing itself from inside that call).
    pub fn remove_room_handler(&self, id: &str) -> bool {
        let removed = {
            let mut handlers = self.subscribers.handlers.lock();
            let found = handlers.iter().find(|h| h.id == id).cloned();
            if found.is_some() {
                let next: Vec<Arc<HandlerEntry>> =
                    handlers.iter().filter(|h| h.id != id).cloned().collect();
                *handlers = next.into();
            }
            found
        };
        match removed {
            Some(entry) => {
                self.retire(&entry);
                true
            }
            None => false,
        }
    }

    fn retire(&self, entry: &HandlerEntry) {
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
        // mailbox is closed (session closed or engine stopped).
        drop(self.runtime.spawn(run_dispatcher(mailbox, subscribers)));
    }
}

async fn run_dispatcher(mailbox: Arc<Mailbox>, subscribers: Arc<Subscribers>) {
    let mut batch = VecDeque::new();
    while let Some(missed) = poll_fn(|cx| mailbox.poll_drain(cx, &mut batch)).await {
        if missed > 0 {
            tracing::warn!(
                missed,
                "a client's event queue overflowed; its oldest events were dropped"
            );
        }
        let handlers = subscribers.handlers.lock().clone();
        let mut streams = subscribers.streams.lock().clone();
        for s in &streams {
            if missed > 0 {
                s.push_missed(missed);
            }
        }
        for item in batch.drain(..) {
            if let ClientEvent::Room(event) = &item {
                for entry in handlers.iter() {
                    call_handler(entry, mailbox.id(), event);
                }
            }
            streams.retain(|s| s.push(item.clone()));
        }
        let mut live = subscribers.streams.lock();
        live.retain(|s| !s.is_closed());
    }
    for s in subscribers.streams.lock().drain(..) {
        s.close();
    }
}

fn call_handler(entry: &HandlerEntry, mailbox_id: u64, event: &ChatRoomEvent) {
    let _gate = entry.gate.read();
    if !entry.alive.load(Ordering::SeqCst) {
        return;
    }
    DISPATCHING.with(|d| d.set(mailbox_id));
    let result = catch_unwind(AssertUnwindSafe(|| dispatch(&*entry.handler, event)));
    DISPATCHING.with(|d| d.set(0));
    if result.is_err() {
        tracing::warn!(handler = %entry.id, "a chat room event handler panicked; it missed this event");
    }
}

/// A `Stream` of one client's events. Ends when the client's session ends or the engine stops.
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
