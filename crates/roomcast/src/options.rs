//! `ChatOptions`: per-client behaviour, as the SDK's.

/// Options of a client (the SDK's `ChatOptions`). Set engine-wide defaults with
/// [`crate::EngineBuilder::chat_options`]; override them per client with
/// [`crate::Engine::login_with_options`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChatOptions {
    /// The SDK's `deleteMessagesAsExitChatRoom`: when the user leaves (or is removed from) a room,
    /// the local copy of that room's messages is deleted. Default `true`.
    pub delete_messages_on_exit: bool,
    /// The SDK's `isChatRoomOwnerLeaveAllowed`: whether a room's owner may leave it; if not,
    /// leaving fails with 706. Default `true`.
    pub chat_room_owner_leave_allowed: bool,
}

impl Default for ChatOptions {
    fn default() -> Self {
        ChatOptions {
            delete_messages_on_exit: true,
            chat_room_owner_leave_allowed: true,
        }
    }
}

/// One `with_*` setter per field, since `ChatOptions` is `#[non_exhaustive]`:
///
/// ```
/// use roomcast::ChatOptions;
/// let options = ChatOptions::default()
///     .with_delete_messages_on_exit(false)
///     .with_chat_room_owner_leave_allowed(false);
/// assert!(!options.delete_messages_on_exit);
/// assert!(!options.chat_room_owner_leave_allowed);
/// ```
impl ChatOptions {
    /// Sets [`ChatOptions::delete_messages_on_exit`].
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # use roomcast::{CreateChatRoomOptions, Engine};
    /// # let engine = Engine::builder().build().await?;
    /// # engine.add_super_admin("host").await?;
    /// # let host = engine.login("host").await?;
    /// # let room = CreateChatRoomOptions::new("stream");
    /// # let room = host.chat_room_manager().create_chat_room(room).await?.room_id;
    /// use roomcast::{ChatOptions, OutgoingMessage};
    /// let keep = ChatOptions::default().with_delete_messages_on_exit(false);
    /// let bob = engine.login_with_options("bob", keep).await?;
    /// let carol = engine.login("carol").await?; // the default: delete
    /// for member in [&bob, &carol] {
    ///     member.chat_room_manager().join_chat_room(&room).await?;
    /// }
    /// host.chat_manager().send_message(OutgoingMessage::text(room, "hello")).await?;
    /// for member in [&bob, &carol] {
    ///     member.chat_room_manager().leave_chat_room(&room).await?;
    /// }
    /// let kept = bob.chat_manager().get_conversation(&room).load_messages(None, 10).await?;
    /// assert_eq!(kept[0].text(), Some("hello"));
    /// let deleted = carol.chat_manager().get_conversation(&room).load_messages(None, 10).await?;
    /// assert!(deleted.is_empty());
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn with_delete_messages_on_exit(mut self, yes: bool) -> Self {
        self.delete_messages_on_exit = yes;
        self
    }

    /// Sets [`ChatOptions::chat_room_owner_leave_allowed`].
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # let engine = roomcast::Engine::builder().build().await?;
    /// # engine.add_super_admin("host").await?;
    /// use roomcast::{ChatOptions, CreateChatRoomOptions};
    /// let stay = ChatOptions::default().with_chat_room_owner_leave_allowed(false);
    /// let host = engine.login_with_options("host", stay).await?;
    /// let rooms = host.chat_room_manager();
    /// let room = rooms.create_chat_room(CreateChatRoomOptions::new("stream")).await?;
    /// assert_eq!(rooms.leave_chat_room(&room.room_id).await.unwrap_err().code(), 706);
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn with_chat_room_owner_leave_allowed(mut self, yes: bool) -> Self {
        self.chat_room_owner_leave_allowed = yes;
        self
    }
}
