//! `ChatClient`: one user's handle on the engine.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use roomcast_engine::{Core, EventStream, Session, StreamCloser};
use roomcast_model::{ChatError, UserId};

use crate::{ChatManager, ChatOptions, ChatRoomManager};

/// Keeps the session online while any clone of a client lives.
pub(crate) struct ClientGuard {
    pub(crate) core: Core,
    pub(crate) session: Arc<Session>,
    /// Set by [`ChatClient::logout`]: the client no longer counts as live, its calls get 201.
    pub(crate) logged_out: AtomicBool,
    /// This client's id among the session's clients: the handlers it registers carry it.
    pub(crate) id: u64,
    /// The event streams this client opened, ended when it logs out.
    streams: Mutex<Vec<StreamCloser>>,
}

impl ClientGuard {
    /// This client stops counting as a live client of its user (once).
    fn close(&self) {
        if !self.logged_out.swap(true, Ordering::SeqCst) {
            self.core.close_client(&self.session);
        }
    }

    /// Logs out: closes, then removes the handlers this client registered and ends its
    /// streams.
    fn logout(&self) {
        self.close();
        self.session.release_client(self.id);
        for s in std::mem::take(&mut *self.streams.lock()) {
            s.close();
        }
    }
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.close();
    }
}

/// Ids of clients, unique in the process.
static NEXT_CLIENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A logged-in user (the SDK's `ChatClient`). Cloning is shallow.
///
/// While any clone of any client of a user lives (and it is not disconnected), the user is
/// online: it gets pushes. When the last one is dropped, or on [`ChatClient::disconnect`], it
/// goes offline: it gets no pushes, and after each room's grace period (5 minutes by default) it
/// is removed from the rooms it is in, unless it is the owner, an admin or allow-listed there.
#[derive(Clone)]
pub struct ChatClient {
    pub(crate) guard: Arc<ClientGuard>,
    pub(crate) options: Arc<ChatOptions>,
}

impl std::fmt::Debug for ChatClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatClient")
            .field("user", self.current_user_id())
            .field("online", &self.is_online())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl ChatClient {
    pub(crate) fn new(core: Core, session: Arc<Session>, options: ChatOptions) -> ChatClient {
        ChatClient {
            guard: Arc::new(ClientGuard {
                core,
                session,
                logged_out: AtomicBool::new(false),
                id: NEXT_CLIENT.fetch_add(1, Ordering::Relaxed),
                streams: Mutex::new(Vec::new()),
            }),
            options: Arc::new(options),
        }
    }

    /// The engine, for a call: 201 once this client has logged out.
    pub(crate) fn core(&self) -> Result<&Core, ChatError> {
        if self.guard.logged_out.load(Ordering::SeqCst) {
            return Err(ChatError::UserNotLogin);
        }
        Ok(&self.guard.core)
    }

    /// Logs this client out (the SDK's `ChatClient.logout`): it stops counting as a live client
    /// of its user, so the user goes offline if it was the last one (and leaves its rooms after
    /// their grace period unless it comes back), and every later call on this client or its
    /// clones, and on its managers, fails with 201 ([`ChatError::UserNotLogin`]). The handlers
    /// registered through this client are removed and the event streams it opened end; a
    /// handler added or a stream opened after logout gets nothing. Other clients of the same
    /// user, and the handlers and streams they registered, are not affected. Idempotent.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// let engine = roomcast::Engine::builder().build().await?;
    /// let bob = engine.login("bob").await?;
    /// bob.logout();
    /// assert!(!bob.is_online());
    /// let err = bob.chat_room_manager().fetch_public_chat_rooms(1, 20, None).await;
    /// assert_eq!(err.unwrap_err().code(), 201);
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn logout(&self) {
        self.guard.logout();
    }

    /// True once [`ChatClient::logout`] was called on this client (or a clone).
    pub fn is_logged_out(&self) -> bool {
        self.guard.logged_out.load(Ordering::SeqCst)
    }

    pub(crate) fn session(&self) -> &Arc<Session> {
        &self.guard.session
    }

    /// The user this client is logged in as (lower case).
    pub fn current_user_id(&self) -> &UserId {
        self.session().user()
    }

    /// This client's options.
    pub fn options(&self) -> &ChatOptions {
        &self.options
    }

    /// The chat-room manager (the SDK's `ChatClient.chatRoomManager`).
    pub fn chat_room_manager(&self) -> ChatRoomManager {
        ChatRoomManager {
            client: self.clone(),
        }
    }

    /// The chat manager: messages (the SDK's `ChatClient.chatManager`).
    pub fn chat_manager(&self) -> ChatManager {
        ChatManager {
            client: self.clone(),
        }
    }

    /// A `Stream` of every event this user receives from now on, the same events the handlers
    /// get. It ends when the engine stops. It is bounded (see
    /// [`crate::EngineBuilder::event_queue_capacity`]): if not polled it drops its oldest events
    /// and yields [`crate::ClientEvent::Missed`] with their count.
    pub fn events(&self) -> EventStream {
        let stream = self.session().events();
        let closer = stream.closer();
        if self.is_logged_out() {
            closer.close();
        } else {
            let mut streams = self.guard.streams.lock();
            streams.retain(|s| !s.is_closed());
            streams.push(closer);
            // A logout that ran meanwhile has taken the list: end this one too.
            if self.is_logged_out() {
                for s in streams.drain(..) {
                    s.close();
                }
            }
        }
        stream
    }

    /// This client's id among its session's clients (the handlers it registers carry it).
    pub(crate) fn id(&self) -> u64 {
        self.guard.id
    }

    /// Takes the user offline, as if its connection dropped: no pushes until
    /// [`ChatClient::reconnect`] or a new login of the user, and removal from each room after
    /// its grace period. Applies to the user's session, so to every client of the user.
    pub fn disconnect(&self) -> Result<(), ChatError> {
        self.core()?.set_connected(self.session(), false)
    }

    /// Brings the user back online after [`ChatClient::disconnect`]. Within the grace period it
    /// is still a member of its rooms; what it missed can be fetched from history after the last
    /// sequence number it saw. If it was removed meanwhile, its handlers now get
    /// `on_removed_from_chat_room` with reason `Offline`.
    pub fn reconnect(&self) -> Result<(), ChatError> {
        self.core()?.set_connected(self.session(), true)
    }

    /// True if the user is online.
    pub fn is_online(&self) -> bool {
        self.session().is_online()
    }
}
