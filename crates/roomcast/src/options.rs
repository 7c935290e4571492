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
    pub fn with_delete_messages_on_exit(mut self, yes: bool) -> Self {
        self.delete_messages_on_exit = yes;
        self
    }

    /// Sets [`ChatOptions::chat_room_owner_leave_allowed`].
    pub fn with_chat_room_owner_leave_allowed(mut self, yes: bool) -> Self {
        self.chat_room_owner_leave_allowed = yes;
        self
    }
}
