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
    /// The event streams this client opened, ended when it logs out (most clients open none:
    /// boxed, 8 bytes against 24).
    #[allow(clippy::box_collection)]
    streams: Mutex<Option<Box<Vec<StreamCloser>>>>,
    /// This client's options (in the guard: one allocation per client).
    pub(crate) options: ChatOptions,
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
        self.end_streams();
    }

    fn end_streams(&self) {
        for s in self.streams.lock().take().into_iter().flat_map(|v| *v) {
            s.close();
        }
    }
}

impl Drop for ClientGuard {
    /// The last clone is gone: the client closes and its streams end (nobody can read them
    /// with the client's consent any more); its handlers stay with the user's session, as
    /// the SDK's do across connections, until the session ends or they are removed.
    fn drop(&mut self) {
        self.close();
        self.end_streams();
    }
}

/// Ids of clients, unique in the process.
static NEXT_CLIENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A logged-in user (the SDK's `ChatClient`). Cloning is shallow.
///
/// While any client of a user lives and is not logged out (and the user is not disconnected),
/// the user is online: it gets pushes. When the last one is dropped or logged out, or on
/// [`ChatClient::disconnect`], it goes offline: it gets no pushes, and after each room's grace
/// period (5 minutes by default) it is removed from the rooms it is in, unless it is the owner,
/// an admin or allow-listed there.
///
/// The event streams opened through a client end when it logs out or its last clone is
/// dropped. The handlers registered through it are removed when it logs out; when it is only
/// dropped they stay with the user's session (like the SDK's, they outlive a connection) until
/// they are removed or the user's last client is gone. The user's other clients, and their
/// handlers and streams, are not affected. A WebSocket gateway that logs each connection in
/// calls `logout()` when the connection closes.
///
/// Some examples below start, in hidden lines, from an engine `engine` with a room owned by the
/// super admin `host`, whose id is `room`, and a member `bob`.
#[derive(Clone)]
pub struct ChatClient {
    pub(crate) guard: Arc<ClientGuard>,
}

impl std::fmt::Debug for ChatClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatClient")
            .field("user", self.current_user_id())
            .field("online", &self.is_online())
            .field("options", &self.guard.options)
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
                streams: Mutex::new(None),
                options,
            }),
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
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # let engine = roomcast::Engine::builder().build().await?;
    /// let bob = engine.login("bob").await?;
    /// let same = bob.clone();
    /// bob.logout();
    /// assert!(same.is_logged_out()); // clones share it
    /// assert!(!engine.login("bob").await?.is_logged_out()); // a new login is a new client
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn is_logged_out(&self) -> bool {
        self.guard.logged_out.load(Ordering::SeqCst)
    }

    pub(crate) fn session(&self) -> &Arc<Session> {
        &self.guard.session
    }

    /// The user this client is logged in as (lower case).
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # let engine = roomcast::Engine::builder().build().await?;
    /// let bob = engine.login("Bob").await?;
    /// assert_eq!(bob.current_user_id().as_str(), "bob");
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn current_user_id(&self) -> &UserId {
        self.session().user()
    }

    /// This client's options.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # let engine = roomcast::Engine::builder().build().await?;
    /// use roomcast::ChatOptions;
    /// let strict = ChatOptions::default().with_chat_room_owner_leave_allowed(false);
    /// let host = engine.login_with_options("host", strict.clone()).await?;
    /// assert_eq!(host.options(), &strict);
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn options(&self) -> &ChatOptions {
        &self.guard.options
    }

    /// The chat-room manager (the SDK's `ChatClient.chatRoomManager`).
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # let engine = roomcast::Engine::builder().build().await?;
    /// # engine.add_super_admin("host").await?;
    /// # let host = engine.login("host").await?;
    /// use roomcast::{ChatRoomPermissionType, CreateChatRoomOptions};
    /// let rooms = host.chat_room_manager();
    /// let room = rooms.create_chat_room(CreateChatRoomOptions::new("lobby")).await?;
    /// assert_eq!(room.permission_type, ChatRoomPermissionType::Owner);
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn chat_room_manager(&self) -> ChatRoomManager {
        ChatRoomManager {
            client: self.clone(),
            reason: None,
        }
    }

    /// The chat manager: messages (the SDK's `ChatClient.chatManager`).
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # use roomcast::{CreateChatRoomOptions, Engine};
    /// # let engine = Engine::builder().build().await?;
    /// # engine.add_super_admin("host").await?;
    /// # let host = engine.login("host").await?;
    /// # let room = CreateChatRoomOptions::new("stream");
    /// # let room = host.chat_room_manager().create_chat_room(room).await?.room_id;
    /// use roomcast::OutgoingMessage;
    /// let chat = host.chat_manager();
    /// let sent = chat.send_message(OutgoingMessage::text(room, "hello")).await?;
    /// assert_eq!(sent.text(), Some("hello"));
    /// assert_eq!(sent.from().as_str(), "host");
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn chat_manager(&self) -> ChatManager {
        ChatManager {
            client: self.clone(),
        }
    }

    /// A new stream of the events this user receives from now on (events already on their way to
    /// the user when it is opened may be included): room events and messages, the same ones its
    /// handlers get, in the same order. Every stream of the user gets every event, each read at its
    /// own pace. It is a `futures_core::Stream`: read it with `StreamExt::next` (from
    /// `futures-util` or `tokio-stream`).
    ///
    /// The stream is bounded, and it ends when this client logs out or its last clone is
    /// dropped, or when the engine stops; [`EventStream`] states the whole contract. While the
    /// user is offline ([`ChatClient::disconnect`]) nothing is delivered to it. A stream opened
    /// on a logged-out client ends at once.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # use roomcast::{CreateChatRoomOptions, Engine};
    /// # let engine = Engine::builder().build().await?;
    /// # engine.add_super_admin("host").await?;
    /// # let host = engine.login("host").await?;
    /// # let room = CreateChatRoomOptions::new("stream");
    /// # let room = host.chat_room_manager().create_chat_room(room).await?.room_id;
    /// # let bob = engine.login("bob").await?;
    /// # bob.chat_room_manager().join_chat_room(&room).await?;
    /// use futures_util::StreamExt;
    /// use roomcast::{ChatRoomEvent, ClientEvent, OutgoingMessage};
    /// use std::time::Duration;
    ///
    /// let mut events = bob.events();
    /// host.chat_manager().send_message(OutgoingMessage::text(room, "hello")).await?;
    /// host.chat_room_manager().update_chat_room_announcement(&room, "Q&A at 8").await?;
    ///
    /// // Events arrive asynchronously: wait for each with a deadline, never a sleep.
    /// let deadline = Duration::from_secs(10);
    /// match tokio::time::timeout(deadline, events.next()).await.expect("an event") {
    ///     Some(ClientEvent::Message(message)) => assert_eq!(message.text(), Some("hello")),
    ///     other => panic!("unexpected {other:?}"),
    /// }
    /// match tokio::time::timeout(deadline, events.next()).await.expect("an event") {
    ///     Some(ClientEvent::Room(event)) => {
    ///         assert!(matches!(*event, ChatRoomEvent::AnnouncementChanged { .. }))
    ///     }
    ///     other => panic!("unexpected {other:?}"),
    /// }
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    ///
    /// # Falling behind
    ///
    /// A stream holds at most [`crate::EngineBuilder::event_queue_capacity`] events. One that is
    /// not read keeps the newest: it drops its oldest, and its next item is
    /// [`crate::ClientEvent::Missed`] with how many it dropped. Other streams and handlers of the
    /// user are not affected.
    ///
    /// ```
    /// # use futures_util::StreamExt;
    /// # async fn next(events: &mut roomcast::EventStream) -> roomcast::ClientEvent {
    /// #     let event = tokio::time::timeout(std::time::Duration::from_secs(10), events.next());
    /// #     event.await.expect("an event within 10 s").expect("the stream is open")
    /// # }
    /// # async fn next_room_event(events: &mut roomcast::EventStream) -> roomcast::ChatRoomEvent {
    /// #     match next(events).await {
    /// #         roomcast::ClientEvent::Room(event) => (*event).clone(),
    /// #         other => panic!("expected a room event, got {other:?}"),
    /// #     }
    /// # }
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// use roomcast::{ChatRoomEvent, ClientEvent, CreateChatRoomOptions, Engine};
    /// let engine = Engine::builder().event_queue_capacity(2).build().await?;
    /// # engine.add_super_admin("host").await?;
    /// # let host = engine.login("host").await?;
    /// # let room = CreateChatRoomOptions::new("r");
    /// # let room = host.chat_room_manager().create_chat_room(room).await?.room_id;
    /// let mut behind = host.events(); // not read while five viewers join
    /// let mut live = host.events(); // read as they join
    /// for n in 1..=5 {
    ///     let viewer = engine.login(format!("viewer{n}")).await?;
    ///     viewer.chat_room_manager().join_chat_room(&room).await?;
    ///     next(&mut live).await; // once `live` has the join, `behind` has it too
    /// }
    /// // `behind` dropped its three oldest events: it says so, then yields the two newest.
    /// assert!(matches!(next(&mut behind).await, ClientEvent::Missed { count: 3 }));
    /// for expected in ["viewer4", "viewer5"] {
    ///     match next_room_event(&mut behind).await {
    ///         ChatRoomEvent::MemberJoined { participant, .. } => {
    ///             assert_eq!(participant.as_str(), expected)
    ///         }
    ///         other => panic!("unexpected {other:?}"),
    ///     }
    /// }
    /// assert_eq!(engine.overflowed_deliveries(), 3);
    /// engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    ///
    /// # When it ends
    ///
    /// A stream ends when the client that opened it logs out (or its last clone is dropped), or
    /// when the engine stops, after yielding the events it holds. Another client's streams and
    /// handlers go on:
    ///
    /// ```
    /// # use futures_util::StreamExt;
    /// # async fn next(events: &mut roomcast::EventStream) -> roomcast::ClientEvent {
    /// #     let event = tokio::time::timeout(std::time::Duration::from_secs(10), events.next());
    /// #     event.await.expect("an event within 10 s").expect("the stream is open")
    /// # }
    /// # async fn next_room_event(events: &mut roomcast::EventStream) -> roomcast::ChatRoomEvent {
    /// #     match next(events).await {
    /// #         roomcast::ClientEvent::Room(event) => (*event).clone(),
    /// #         other => panic!("expected a room event, got {other:?}"),
    /// #     }
    /// # }
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # use roomcast::{CreateChatRoomOptions, Engine};
    /// # let engine = Engine::builder().build().await?;
    /// # engine.add_super_admin("host").await?;
    /// # let host = engine.login("host").await?;
    /// # let room = CreateChatRoomOptions::new("stream");
    /// # let room = host.chat_room_manager().create_chat_room(room).await?.room_id;
    /// # let bob = engine.login("bob").await?;
    /// # bob.chat_room_manager().join_chat_room(&room).await?;
    /// use roomcast::ChatRoomEvent;
    /// let announced = |event: ChatRoomEvent| match event {
    ///     ChatRoomEvent::AnnouncementChanged { announcement, .. } => announcement,
    ///     other => panic!("unexpected {other:?}"),
    /// };
    /// let rooms = host.chat_room_manager();
    /// let phone = engine.login("bob").await?; // a second client of bob
    /// let mut on_bob = bob.events();
    /// let mut on_phone = phone.events();
    /// bob.logout();
    /// let end = tokio::time::timeout(std::time::Duration::from_secs(10), on_bob.next());
    /// assert!(end.await.expect("the stream ends").is_none());
    /// rooms.update_chat_room_announcement(&room, "welcome back").await?;
    /// assert_eq!(announced(next_room_event(&mut on_phone).await), "welcome back");
    /// let mut events = on_phone;
    ///
    /// // `events` holds no unread event now; give it one, unread, and stop the engine: it
    /// // yields it, then ends.
    /// rooms.update_chat_room_announcement(&room, "closing").await?;
    /// # let mut probe = phone.events();
    /// # rooms.update_chat_room_announcement(&room, "fence").await?;
    /// # while announced(next_room_event(&mut probe).await) != "fence" {}
    /// engine.shutdown().await;
    /// assert_eq!(announced(next_room_event(&mut events).await), "closing");
    /// # assert_eq!(announced(next_room_event(&mut events).await), "fence");
    /// let end = tokio::time::timeout(std::time::Duration::from_secs(10), events.next());
    /// assert!(end.await.expect("the stream ends").is_none());
    /// # Ok(()) }
    /// ```
    ///
    /// Dropping the last [`crate::Engine`] handle stops the engine too, and so ends its streams:
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// use futures_util::StreamExt;
    /// let engine = roomcast::Engine::builder().build().await?;
    /// let bob = engine.login("bob").await?;
    /// let mut events = bob.events();
    /// drop(engine); // the last Engine handle: the engine stops, though `bob` lives on
    /// let end = tokio::time::timeout(std::time::Duration::from_secs(10), events.next());
    /// assert!(end.await.expect("the stream ends").is_none());
    /// assert_eq!(bob.disconnect().unwrap_err().code(), 900);
    /// # Ok(()) }
    /// ```
    pub fn events(&self) -> EventStream {
        let stream = self.session().events();
        let closer = stream.closer();
        if self.is_logged_out() {
            closer.close();
        } else {
            let mut streams = self.guard.streams.lock();
            let list = streams.get_or_insert_with(Default::default);
            list.retain(|s| !s.is_closed());
            list.push(closer);
            // A logout that ran meanwhile has taken the list: end this one too.
            if self.is_logged_out() {
                for s in list.drain(..) {
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
    ///
    /// ```
    /// # use futures_util::StreamExt;
    /// # async fn next(events: &mut roomcast::EventStream) -> roomcast::ClientEvent {
    /// #     let event = tokio::time::timeout(std::time::Duration::from_secs(10), events.next());
    /// #     event.await.expect("an event within 10 s").expect("the stream is open")
    /// # }
    /// # async fn next_room_event(events: &mut roomcast::EventStream) -> roomcast::ChatRoomEvent {
    /// #     match next(events).await {
    /// #         roomcast::ClientEvent::Room(event) => (*event).clone(),
    /// #         other => panic!("expected a room event, got {other:?}"),
    /// #     }
    /// # }
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// use roomcast::{ChatRoomEvent, LeaveReason, ManualClock};
    /// use std::time::Duration;
    /// let clock = ManualClock::new(1_700_000_000_000);
    /// # use roomcast::{CreateChatRoomOptions, Engine};
    /// # let engine = Engine::builder().clock(clock.clone()).build().await?;
    /// # engine.add_super_admin("host").await?;
    /// # let host = engine.login("host").await?;
    /// # let room = CreateChatRoomOptions::new("stream");
    /// # let room = host.chat_room_manager().create_chat_room(room).await?.room_id;
    /// let mut host_events = host.events();
    /// let bob = engine.login("bob").await?;
    /// bob.chat_room_manager().join_chat_room(&room).await?;
    /// let joined = next_room_event(&mut host_events).await;
    /// assert!(matches!(joined, ChatRoomEvent::MemberJoined { .. }));
    /// let mut bob_events = bob.events();
    ///
    /// bob.disconnect()?;
    /// assert!(!bob.is_online());
    /// clock.advance(Duration::from_secs(5 * 60)); // the default grace period: bob is removed
    /// assert!(matches!(next_room_event(&mut host_events).await,
    ///     ChatRoomEvent::MemberExited { participant, .. } if participant.as_str() == "bob"));
    /// bob.reconnect()?; // and told so when back
    /// assert!(matches!(next_room_event(&mut bob_events).await,
    ///     ChatRoomEvent::RemovedFromChatRoom { reason: LeaveReason::Offline, .. }));
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn disconnect(&self) -> Result<(), ChatError> {
        self.core()?.set_connected(self.session(), false)
    }

    /// Brings the user back online after [`ChatClient::disconnect`]. Within the grace period it
    /// is still a member of its rooms; what it missed can be fetched from history after the last
    /// sequence number it saw. If it was removed from a room meanwhile, its handlers and streams
    /// now get `on_removed_from_chat_room` with the reason (`Offline` after the grace period).
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # use roomcast::{CreateChatRoomOptions, Engine};
    /// # let engine = Engine::builder().build().await?;
    /// # engine.add_super_admin("host").await?;
    /// # let host = engine.login("host").await?;
    /// # let room = CreateChatRoomOptions::new("stream");
    /// # let room = host.chat_room_manager().create_chat_room(room).await?.room_id;
    /// # let bob = engine.login("bob").await?;
    /// # bob.chat_room_manager().join_chat_room(&room).await?;
    /// use roomcast::{HistoryQuery, OutgoingMessage};
    /// let chat = host.chat_manager();
    /// let last_seen = chat.send_message(OutgoingMessage::text(room, "before")).await?.seq();
    /// bob.disconnect()?;
    /// chat.send_message(OutgoingMessage::text(room, "while away")).await?;
    /// bob.reconnect()?; // within the grace period: still a member
    /// assert!(bob.is_online());
    /// chat.send_message(OutgoingMessage::text(room, "after")).await?;
    ///
    /// let query = HistoryQuery::after(last_seen, 50);
    /// let missed = bob.chat_manager().fetch_history_messages(&room, query).await?;
    /// let texts: Vec<&str> = missed.data.iter().filter_map(|m| m.text()).collect();
    /// assert_eq!(texts, ["while away", "after"]);
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn reconnect(&self) -> Result<(), ChatError> {
        self.core()?.set_connected(self.session(), true)
    }

    /// True if the user is online.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # let engine = roomcast::Engine::builder().build().await?;
    /// let bob = engine.login("bob").await?;
    /// assert!(bob.is_online());
    /// bob.disconnect()?;
    /// assert!(!bob.is_online());
    /// let bob_again = engine.login("bob").await?; // a new login clears the disconnect
    /// assert!(bob.is_online() && bob_again.is_online()); // one session: one presence
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn is_online(&self) -> bool {
        self.session().is_online()
    }
}
