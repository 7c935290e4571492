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
    /// The welcome message for the members added at creation. Default empty.
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
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// Sets [`CreateChatRoomOptions::welcome_message`].
    pub fn with_welcome_message(mut self, message: impl Into<String>) -> Self {
        self.welcome_message = message.into();
        self
    }

    /// Sets [`CreateChatRoomOptions::members`].
    pub fn with_members<I, S>(mut self, members: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.members = members.into_iter().map(Into::into).collect();
        self
    }

    /// Sets [`CreateChatRoomOptions::max_users`].
    pub fn with_max_users(mut self, max_users: u32) -> Self {
        self.max_users = Some(max_users);
        self
    }

    /// Sets [`CreateChatRoomOptions::limits`].
    pub fn with_limits(mut self, limits: RoomLimits) -> Self {
        self.limits = limits;
        self
    }
}

/// The chat-room calls of one client (the SDK's `ChatRoomManager`). Cloning is shallow.
///
/// Every call is made as the client's user, and fails with the code of the first rule it breaks
/// (see [`ChatError::code`]). Calls on an unknown room fail with 705; calls after
/// [`crate::Engine::shutdown`] with 900.
#[derive(Clone)]
pub struct ChatRoomManager {
    pub(crate) client: ChatClient,
}

impl std::fmt::Debug for ChatRoomManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatRoomManager")
            .field("user", self.client.current_user_id())
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
    pub async fn destroy_chat_room(&self, room_id: &RoomId) -> Result<(), ChatError> {
        self.client
            .core()?
            .destroy_room(self.user(), *room_id)
            .await
    }

    /// Joins a room and returns it. The other members get `on_member_joined_from_chat_room`.
    /// Joining a room one is already in fails with 701 (it is not idempotent, as the SDK); a
    /// full room is 704, a blocked user 707, an unknown room 705.
    pub async fn join_chat_room(&self, room_id: &RoomId) -> Result<ChatRoom, ChatError> {
        self.client
            .core()?
            .join_room(self.client.session(), *room_id)
            .await
    }

    /// Leaves a room. The other members get `on_member_exited_from_chat_room`. Fails with 702
    /// if not in the room, and 706 for the owner if the client's options forbid the owner to
    /// leave. An owner who leaves is still the owner when it comes back.
    pub async fn leave_chat_room(&self, room_id: &RoomId) -> Result<(), ChatError> {
        let owner_may_leave = self.client.options.chat_room_owner_leave_allowed;
        self.client
            .core()?
            .leave_room(self.user(), *room_id, owner_may_leave)
            .await
    }

    /// The room's details as the engine holds them now (the SDK's
    /// `fetchChatRoomInfoFromServer`): id, name, description, announcement, owner, admins, max
    /// and current members, mute-all, the room's own limits, and the caller's role. Any
    /// logged-in user may look, member or not.
    pub async fn fetch_chat_room_info(&self, room_id: &RoomId) -> Result<ChatRoom, ChatError> {
        self.client.core()?.room_info(self.user(), *room_id).await
    }

    /// Page `page_num` (from 1) of the public room list, newest first (the SDK's
    /// `fetchPublicChatRoomsFromServer`), with only the rooms whose name contains
    /// `name_contains`, ignoring case, if given. The page size is 1 to the engine's
    /// `public_room_page_max` (100 by default; 110 otherwise). Each room's `permission_type` is
    /// `None`: the list does not say the caller's role (fetch the room's info for it).
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
    pub fn remove_event_handler(&self, id: &str) -> bool {
        self.client.session().remove_room_handler(id)
    }
}
