//! `ChatManager`: sending and fetching messages.

use std::sync::Arc;

use roomcast_model::{
    ChatCursorResult, ChatError, ChatMessage, HistoryQuery, OutgoingMessage, RoomId,
};

use crate::{ChatClient, ChatEventHandler};

/// The message calls of one client (the SDK's `ChatManager`). Cloning is shallow.
#[derive(Clone)]
pub struct ChatManager {
    pub(crate) client: ChatClient,
}

impl std::fmt::Debug for ChatManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatManager")
            .field("user", self.client.current_user_id())
            .finish()
    }
}

impl ChatManager {
    /// Sends a message to a room and returns it as the room accepted it, with its engine-wide
    /// id, the room's next sequence number and the server time. Every other member online gets it
    /// through `on_messages_received`; the sender does not get it back.
    ///
    /// Fails with 500 for an empty text or event name, 510 if the body and attributes are over
    /// the size limit (5 KB), 702 if the sender is not in the room, 210 if blocked, 215 if muted,
    /// 219 if the room is all-muted and the sender is not the owner, an admin or allow-listed,
    /// and 4 if the room is over its delivery threshold and dropped this message by priority.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// use roomcast::{CreateChatRoomOptions, Engine, MessagePriority, OutgoingMessage};
    /// let engine = Engine::builder().build().await?;
    /// engine.add_super_admin("host").await?;
    /// let host = engine.login("host").await?;
    /// let room = host
    ///     .chat_room_manager()
    ///     .create_chat_room(CreateChatRoomOptions::new("stream"))
    ///     .await?;
    /// let sent = host
    ///     .chat_manager()
    ///     .send_message(OutgoingMessage::text(room.room_id, "welcome!").with_priority(MessagePriority::High))
    ///     .await?;
    /// assert_eq!(sent.seq(), 1);
    /// # Ok(()) }
    /// ```
    pub async fn send_message(&self, message: OutgoingMessage) -> Result<ChatMessage, ChatError> {
        self.client
            .core()?
            .send_message(self.client.current_user_id(), message)
            .await
    }

    /// A page of a room's retained history (the SDK's `fetchHistoryMessages`), for a member of
    /// the room (702 otherwise). `HistoryQuery::newest(n)` pages back from the newest;
    /// `HistoryQuery::after(seq, n)` fetches what came after the last message seen, without gaps
    /// or duplicates while it is retained. The page size is 1 to 200 (110 otherwise).
    pub async fn fetch_history_messages(
        &self,
        room_id: &RoomId,
        query: HistoryQuery,
    ) -> Result<ChatCursorResult<ChatMessage>, ChatError> {
        self.client
            .core()?
            .fetch_history(self.client.current_user_id(), *room_id, query)
            .await
    }

    /// This user's local copy of a room's conversation (the SDK's `getConversation`): the
    /// messages of the room from when it joined to when it left, kept after it leaves only if
    /// its `ChatOptions::delete_messages_on_exit` is false.
    pub fn get_conversation(&self, room_id: &RoomId) -> Conversation {
        Conversation {
            client: self.client.clone(),
            room_id: *room_id,
        }
    }

    /// Registers a message handler under `id`, replacing any with the same id.
    pub fn add_event_handler(&self, id: impl Into<String>, handler: impl ChatEventHandler) {
        self.client
            .session()
            .add_chat_handler(id.into(), Arc::new(handler), self.client.id());
        if self.client.is_logged_out() {
            // Registered after (or while) this client logged out: it gets nothing.
            self.client.session().release_client(self.client.id());
        }
    }

    /// Removes the message handler under `id`; true if there was one. Once this returns, the
    /// handler is not started again. Called from outside a handler, it also waits for a call of
    /// the handler in progress; called from inside a handler (removing itself or another
    /// client's), it does not wait, so that handlers can never deadlock each other.
    pub fn remove_event_handler(&self, id: &str) -> bool {
        self.client.session().remove_chat_handler(id)
    }
}

/// A user's local copy of a room's conversation (the SDK's `ChatConversation`).
///
/// The copy is the room's messages from each time the user joined to when it left. Messages are
/// stored once per room: the copy only records the spans of sequence numbers, so leaving costs
/// the same whatever the room holds. When the user leaves, the copy is deleted if
/// `delete_messages_on_exit` (default true), and kept otherwise. A kept copy shows what the room
/// still retains: messages the room's retention (count or age) or its destruction drops are gone
/// from kept copies too.
#[derive(Clone)]
pub struct Conversation {
    client: ChatClient,
    room_id: RoomId,
}

impl std::fmt::Debug for Conversation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conversation")
            .field("user", self.client.current_user_id())
            .field("room_id", &self.room_id)
            .finish()
    }
}

impl Conversation {
    /// The room.
    pub fn room_id(&self) -> RoomId {
        self.room_id
    }

    /// Up to `count` messages of the copy, newest first; only those older than `before` (a
    /// sequence number) if given (the SDK's `loadMessages`).
    pub async fn load_messages(
        &self,
        before: Option<u64>,
        count: usize,
    ) -> Result<Vec<ChatMessage>, ChatError> {
        if count == 0 || count > 400 {
            return Err(ChatError::InvalidParam(
                "load 1 to 400 messages at a time".into(),
            ));
        }
        self.client
            .core()?
            .load_local_messages(self.client.current_user_id(), self.room_id, before, count)
            .await
    }
}
