//! `ChatRoomManager`: the SDK's chat-room calls.

use std::sync::Arc;

use roomcast_model::{ChatError, ChatPageResult, ChatRoom, RoomId, RoomLimits, RoomSpec, UserId};

use crate::{ChatClient, ChatRoomEventHandler};

/// What to create a room with (the parameters of the SDK's `createChatRoom`), with one
/// `with_*` setter per field.
///
/// ```
/// use roomcast::{CreateChatRoomOptions, RoomLimits};
/// use std::time::Duration;
/// let options = CreateChatRoomOptions::new("Friday stream")
///     .with_description("live Q&A")
///     .with_max_users(5_000)
///     .with_limits(RoomLimits::default().with_offline_grace(Duration::from_secs(60)));
/// assert_eq!(options.max_users, Some(5_000));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CreateChatRoomOptions {
    /// The name, required, 1 to 128 characters by default.
    pub name: String,
    /// The description, up to 512 characters by default. Default empty.
    pub description: String,
    /// A welcome message for the members added at creation (the SDK's `welcomeMessage`), up to
    /// 512 characters by default. It is checked and kept with the room, but roomcast neither
    /// delivers it nor shows it in [`ChatRoom`]. Default empty.
    pub welcome_message: String,
    /// Users to put in the room at creation, besides the creator. Default none.
    pub members: Vec<String>,
    /// The most members the room may hold. Default: the engine's `default_max_users` (300, as
    /// the SDK), and at most its `max_users_cap`.
    pub max_users: Option<u32>,
    /// The room's own limits (delivery threshold, message window, offline grace, join-event
    /// threshold, replay count, retention); unset fields are the engine's. Its owner may change
    /// them later with [`ChatRoomManager::change_chat_room_limits`].
    pub limits: RoomLimits,
}

impl CreateChatRoomOptions {
    /// Options for a room named `name`, everything else default.
    ///
    /// ```
    /// use roomcast::CreateChatRoomOptions;
    /// let options = CreateChatRoomOptions::new("lobby");
    /// assert_eq!(options.name, "lobby");
    /// assert!(options.description.is_empty() && options.members.is_empty());
    /// assert_eq!(options.max_users, None); // the engine's default_max_users
    /// ```
    pub fn new(name: impl Into<String>) -> Self {
        CreateChatRoomOptions {
            name: name.into(),
            description: String::new(),
            welcome_message: String::new(),
            members: Vec::new(),
            max_users: None,
            limits: RoomLimits::default(),
        }
    }

    /// Sets [`CreateChatRoomOptions::description`].
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # let engine = roomcast::Engine::builder().build().await?;
    /// # engine.add_super_admin("host").await?;
    /// # let host = engine.login("host").await?;
    /// use roomcast::CreateChatRoomOptions;
    /// let options = CreateChatRoomOptions::new("finals").with_description("best of five");
    /// let room = host.chat_room_manager().create_chat_room(options).await?;
    /// assert_eq!(room.description, "best of five");
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// Sets [`CreateChatRoomOptions::welcome_message`].
    ///
    /// ```
    /// use roomcast::CreateChatRoomOptions;
    /// let options = CreateChatRoomOptions::new("finals").with_welcome_message("Welcome!");
    /// assert_eq!(options.welcome_message, "Welcome!");
    /// ```
    pub fn with_welcome_message(mut self, message: impl Into<String>) -> Self {
        self.welcome_message = message.into();
        self
    }

    /// Sets [`CreateChatRoomOptions::members`].
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # let engine = roomcast::Engine::builder().build().await?;
    /// # engine.add_super_admin("host").await?;
    /// # let host = engine.login("host").await?;
    /// use roomcast::CreateChatRoomOptions;
    /// let options = CreateChatRoomOptions::new("finals").with_members(["ann", "ben"]);
    /// let room = host.chat_room_manager().create_chat_room(options).await?;
    /// assert_eq!(room.member_count, 3); // the creator, ann and ben
    /// let ann = engine.login("ann").await?;
    /// let err = ann.chat_room_manager().join_chat_room(&room.room_id).await.unwrap_err();
    /// assert_eq!(err.code(), 701); // already in
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn with_members<I, S>(mut self, members: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.members = members.into_iter().map(Into::into).collect();
        self
    }

    /// Sets [`CreateChatRoomOptions::max_users`].
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # let engine = roomcast::Engine::builder().build().await?;
    /// # engine.add_super_admin("host").await?;
    /// # let host = engine.login("host").await?;
    /// use roomcast::CreateChatRoomOptions;
    /// let options = CreateChatRoomOptions::new("duel").with_max_users(2);
    /// let room = host.chat_room_manager().create_chat_room(options).await?;
    /// assert_eq!(room.max_users, 2);
    /// engine.login("ann").await?.chat_room_manager().join_chat_room(&room.room_id).await?;
    /// let ben = engine.login("ben").await?;
    /// let full = ben.chat_room_manager().join_chat_room(&room.room_id).await.unwrap_err();
    /// assert_eq!(full.code(), 704);
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn with_max_users(mut self, max_users: u32) -> Self {
        self.max_users = Some(max_users);
        self
    }

    /// Sets [`CreateChatRoomOptions::limits`].
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # let engine = roomcast::Engine::builder().build().await?;
    /// # engine.add_super_admin("host").await?;
    /// # let host = engine.login("host").await?;
    /// use roomcast::{CreateChatRoomOptions, RoomLimits};
    /// use std::time::Duration;
    /// let quick = RoomLimits::default().with_offline_grace(Duration::from_secs(30));
    /// let options = CreateChatRoomOptions::new("lightning round").with_limits(quick);
    /// let room = host.chat_room_manager().create_chat_room(options).await?;
    /// assert_eq!(room.limits.offline_grace, Some(Duration::from_secs(30)));
    /// assert_eq!(room.limits.history_retention, None); // the engine's
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn with_limits(mut self, limits: RoomLimits) -> Self {
        self.limits = limits;
        self
    }
}

/// The chat-room calls of one client (the SDK's `ChatRoomManager`). Cloning is shallow.
///
/// Every call is made as the client's user, and fails with the code of the first rule it breaks
/// (see [`ChatError::code`]). Calls on an unknown room fail with 705; calls after
/// [`crate::Engine::shutdown`] with 900. A change's callback goes to the members Agora names,
/// never to the member who made the change.
///
/// Most examples below start, in hidden lines, from an engine `engine` with a room owned by the
/// super admin `host`, whose id is `room`, and a member `bob` (each a [`ChatClient`]).
#[derive(Clone)]
pub struct ChatRoomManager {
    pub(crate) client: ChatClient,
    /// The reason moderation calls through this manager give (see
    /// [`ChatRoomManager::with_reason`]).
    pub(crate) reason: Option<String>,
}

impl std::fmt::Debug for ChatRoomManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatRoomManager")
            .field("user", self.client.current_user_id())
            .field("reason", &self.reason)
            .finish()
    }
}

impl ChatRoomManager {
    fn user(&self) -> &UserId {
        self.client.session().user()
    }

    /// Creates a room; only an app super admin may (703 otherwise). The creator becomes owner
    /// and is in the room, with the `members` of the options; no join events are sent for them.
    /// The engine generates the room id. Fails with 110 for a bad name, description, welcome
    /// message, member id or max members, 704 if the members do not fit, 4 if the engine holds
    /// its maximum of rooms.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// use roomcast::{CreateChatRoomOptions, Engine};
    /// let engine = Engine::builder().build().await?;
    /// engine.add_super_admin("host").await?;
    /// let host = engine.login("host").await?;
    /// let room = host
    ///     .chat_room_manager()
    ///     .create_chat_room(
    ///         CreateChatRoomOptions::new("Friday stream")
    ///             .with_description("live Q&A")
    ///             .with_members(["guest1", "guest2"])
    ///             .with_max_users(2_000),
    ///     )
    ///     .await?;
    /// assert_eq!(room.member_count, 3);
    /// assert_eq!(room.owner.as_str(), "host");
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn create_chat_room(
        &self,
        options: CreateChatRoomOptions,
    ) -> Result<ChatRoom, ChatError> {
        let limits = self.client.core()?.limits();
        let spec = RoomSpec {
            name: options.name,
            description: options.description,
            welcome_message: options.welcome_message,
            max_users: options.max_users.unwrap_or(limits.default_max_users),
        };
        let members = options
            .members
            .iter()
            .map(|m| UserId::new(m))
            .collect::<Result<Vec<_>, _>>()?;
        self.client
            .core()?
            .create_room(self.client.session(), spec, options.limits, members)
            .await
    }

    /// Destroys a room; only its owner may (703). Every other member gets
    /// `on_chat_room_destroyed` and then `on_removed_from_chat_room` with reason `Destroyed`;
    /// all are removed at once, and later calls on the room fail with 705.
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
    /// use roomcast::{ChatRoomEvent, LeaveReason};
    /// let rooms = host.chat_room_manager();
    /// assert_eq!(bob.chat_room_manager().destroy_chat_room(&room).await.unwrap_err().code(), 703);
    /// let mut bob_events = bob.events();
    /// rooms.destroy_chat_room(&room).await?;
    /// let destroyed = next_room_event(&mut bob_events).await;
    /// assert!(matches!(destroyed, ChatRoomEvent::ChatRoomDestroyed { .. }));
    /// assert!(matches!(next_room_event(&mut bob_events).await,
    ///     ChatRoomEvent::RemovedFromChatRoom { reason: LeaveReason::Destroyed, .. }));
    /// assert_eq!(rooms.fetch_chat_room_info(&room).await.unwrap_err().code(), 705);
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn destroy_chat_room(&self, room_id: &RoomId) -> Result<(), ChatError> {
        self.client
            .core()?
            .destroy_room(self.user(), *room_id)
            .await
    }

    /// Joins a room and returns it. The other members get `on_member_joined_from_chat_room`
    /// (in a room of more than [`crate::Limits::join_event_threshold`] members, only the owner and
    /// admins do), and the room's newest messages ([`crate::Limits::join_replay_count`]) are
    /// replayed to the joiner as messages.
    /// Joining a room one is already in fails with 701 (it is not idempotent, as the SDK); a
    /// full room is 704, a blocked user 707, an unknown room 705.
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
    /// use roomcast::{ChatRoomEvent, ChatRoomPermissionType, ClientEvent, OutgoingMessage, UserId};
    /// host.chat_manager().send_message(OutgoingMessage::text(room, "first!")).await?;
    /// let mut host_events = host.events();
    /// let bob = engine.login("bob").await?;
    /// let mut bob_events = bob.events();
    /// let joined = bob.chat_room_manager().join_chat_room(&room).await?;
    /// assert_eq!(joined.member_count, 2);
    /// assert_eq!(joined.permission_type, ChatRoomPermissionType::Member);
    /// // The others are told; the newest messages are replayed to bob.
    /// let told = ChatRoomEvent::MemberJoined { room_id: room, participant: UserId::new("bob")? };
    /// assert_eq!(next_room_event(&mut host_events).await, told);
    /// let replayed = next(&mut bob_events).await;
    /// assert!(matches!(replayed, ClientEvent::Message(m) if m.text() == Some("first!")));
    /// let again = bob.chat_room_manager().join_chat_room(&room).await;
    /// assert_eq!(again.unwrap_err().code(), 701);
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn join_chat_room(&self, room_id: &RoomId) -> Result<ChatRoom, ChatError> {
        self.client
            .core()?
            .join_room(self.client.session(), *room_id)
            .await
    }

    /// Leaves a room. The other members get `on_member_exited_from_chat_room` (only the owner and
    /// admins in a room above [`crate::Limits::join_event_threshold`]). Fails with 702
    /// if not in the room, and 706 for the owner if the client's options forbid the owner to
    /// leave. An owner who leaves is still the owner when it comes back.
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
    /// use roomcast::{ChatRoomEvent, ChatRoomPermissionType};
    /// let rooms = host.chat_room_manager();
    /// let mut host_events = host.events();
    /// let bob = engine.login("bob").await?;
    /// bob.chat_room_manager().join_chat_room(&room).await?;
    /// bob.chat_room_manager().leave_chat_room(&room).await?;
    /// let joined = next_room_event(&mut host_events).await;
    /// assert!(matches!(joined, ChatRoomEvent::MemberJoined { .. }));
    /// let left = next_room_event(&mut host_events).await;
    /// assert!(matches!(left, ChatRoomEvent::MemberExited { .. }));
    /// assert_eq!(bob.chat_room_manager().leave_chat_room(&room).await.unwrap_err().code(), 702);
    ///
    /// // The owner may leave (by default), and is still the owner when it comes back.
    /// rooms.leave_chat_room(&room).await?;
    /// let back = rooms.join_chat_room(&room).await?;
    /// assert_eq!(back.permission_type, ChatRoomPermissionType::Owner);
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn leave_chat_room(&self, room_id: &RoomId) -> Result<(), ChatError> {
        let owner_may_leave = self.client.options().chat_room_owner_leave_allowed;
        self.client
            .core()?
            .leave_room(self.user(), *room_id, owner_may_leave)
            .await
    }

    /// The room's details as the engine holds them now (the SDK's
    /// `fetchChatRoomInfoFromServer`): id, name, description, announcement, owner, admins, max
    /// and current members, mute-all, the room's own limits, and the caller's role. Any
    /// logged-in user may look, member or not.
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
    /// use roomcast::ChatRoomPermissionType;
    /// let outsider = engine.login("carol").await?;
    /// let info = outsider.chat_room_manager().fetch_chat_room_info(&room).await?;
    /// assert_eq!(info.name, "stream");
    /// assert_eq!(info.owner.as_str(), "host");
    /// assert_eq!(info.member_count, 2);
    /// assert_eq!(info.permission_type, ChatRoomPermissionType::None); // carol is not in it
    /// let info = bob.chat_room_manager().fetch_chat_room_info(&room).await?;
    /// assert_eq!(info.permission_type, ChatRoomPermissionType::Member);
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn fetch_chat_room_info(&self, room_id: &RoomId) -> Result<ChatRoom, ChatError> {
        self.client.core()?.room_info(self.user(), *room_id).await
    }

    /// Page `page_num` (from 1) of the public room list, newest first (the SDK's
    /// `fetchPublicChatRoomsFromServer`), with only the rooms whose name contains
    /// `name_contains`, ignoring case, if given. The page size is 1 to the engine's
    /// `public_room_page_max` (100 by default; 110 otherwise). Each room's `permission_type` is
    /// `None`: the list does not say the caller's role (fetch the room's info for it).
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # let engine = roomcast::Engine::builder().build().await?;
    /// # engine.add_super_admin("host").await?;
    /// # let host = engine.login("host").await?;
    /// use roomcast::CreateChatRoomOptions;
    /// let rooms = host.chat_room_manager();
    /// for name in ["Speedruns", "Cooking", "Speedrun talk"] {
    ///     rooms.create_chat_room(CreateChatRoomOptions::new(name)).await?;
    /// }
    /// let page = rooms.fetch_public_chat_rooms(1, 2, None).await?;
    /// let names: Vec<&str> = page.data.iter().map(|r| r.name.as_str()).collect();
    /// assert_eq!(names, ["Speedrun talk", "Cooking"]); // newest first
    /// assert_eq!(page.total, 3);
    /// assert!(page.has_more());
    /// let found = rooms.fetch_public_chat_rooms(1, 20, Some("SPEEDRUN")).await?;
    /// assert_eq!(found.total, 2);
    /// assert_eq!(rooms.fetch_public_chat_rooms(1, 101, None).await.unwrap_err().code(), 110);
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn fetch_public_chat_rooms(
        &self,
        page_num: u32,
        page_size: u32,
        name_contains: Option<&str>,
    ) -> Result<ChatPageResult<ChatRoom>, ChatError> {
        self.client
            .core()?
            .public_rooms(self.user(), page_num, page_size, name_contains)
            .await
    }

    /// Registers `handler` under `id` for this user's chat-room events (replacing any handler
    /// with the same id). Handlers run on the engine's callback threads, never on a room.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # use roomcast::{CreateChatRoomOptions, Engine};
    /// # let engine = Engine::builder().build().await?;
    /// # engine.add_super_admin("host").await?;
    /// # let host = engine.login("host").await?;
    /// # let room = CreateChatRoomOptions::new("stream");
    /// # let room = host.chat_room_manager().create_chat_room(room).await?.room_id;
    /// use roomcast::{ChatRoomEventHandler, RoomId, UserId};
    /// use tokio::sync::mpsc;
    ///
    /// struct Joins(mpsc::UnboundedSender<UserId>);
    /// impl ChatRoomEventHandler for Joins {
    ///     fn on_member_joined_from_chat_room(&self, _room: &RoomId, participant: &UserId) {
    ///         let _ = self.0.send(participant.clone());
    ///     }
    /// }
    ///
    /// let (tx, mut joins) = mpsc::unbounded_channel();
    /// host.chat_room_manager().add_event_handler("joins", Joins(tx));
    /// engine.login("bob").await?.chat_room_manager().join_chat_room(&room).await?;
    /// let joined = tokio::time::timeout(std::time::Duration::from_secs(10), joins.recv()).await;
    /// assert_eq!(joined.unwrap().unwrap().as_str(), "bob");
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn add_event_handler(&self, id: impl Into<String>, handler: impl ChatRoomEventHandler) {
        self.client
            .session()
            .add_room_handler(id.into(), Arc::new(handler), self.client.id());
        if self.client.is_logged_out() {
            // Registered after (or while) this client logged out: it gets nothing.
            self.client.session().release_client(self.client.id());
        }
    }

    /// Removes the handler registered under `id`; true if there was one. Once this returns, the
    /// handler is not started again. Called from outside a handler, it also waits for a call of
    /// the handler in progress; called from inside a handler (removing itself or another
    /// client's), it does not wait, so that handlers can never deadlock each other.
    ///
    /// ```
    /// # use roomcast::{RoomId, UserId};
    /// # struct Joins(tokio::sync::mpsc::UnboundedSender<UserId>);
    /// # impl roomcast::ChatRoomEventHandler for Joins {
    /// #     fn on_member_joined_from_chat_room(&self, _: &RoomId, who: &UserId) {
    /// #         let _ = self.0.send(who.clone());
    /// #     }
    /// # }
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # use roomcast::{CreateChatRoomOptions, Engine};
    /// # let engine = Engine::builder().build().await?;
    /// # engine.add_super_admin("host").await?;
    /// # let host = engine.login("host").await?;
    /// # let room = CreateChatRoomOptions::new("stream");
    /// # let room = host.chat_room_manager().create_chat_room(room).await?.room_id;
    /// use std::time::Duration;
    /// use tokio::sync::mpsc;
    /// // `Joins` sends each joining user to its channel, as in `add_event_handler`.
    /// let rooms = host.chat_room_manager();
    /// let (tx, mut removed) = mpsc::unbounded_channel();
    /// let (tx2, mut kept) = mpsc::unbounded_channel();
    /// rooms.add_event_handler("first", Joins(tx));
    /// rooms.add_event_handler("second", Joins(tx2));
    /// assert!(rooms.remove_event_handler("first"));
    /// assert!(!rooms.remove_event_handler("first")); // nothing under that id any more
    /// engine.login("bob").await?.chat_room_manager().join_chat_room(&room).await?;
    /// // Handlers are called in the order they were added: once "second" has the join,
    /// // "first" would have had it.
    /// let delivered = tokio::time::timeout(Duration::from_secs(10), kept.recv()).await;
    /// assert!(delivered.unwrap().is_some());
    /// assert!(removed.try_recv().is_err());
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn remove_event_handler(&self, id: &str) -> bool {
        self.client.session().remove_room_handler(id)
    }
}
