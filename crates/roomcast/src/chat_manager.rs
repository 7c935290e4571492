//! `ChatManager`: sending and fetching messages.

use std::sync::Arc;

use roomcast_model::{
    ChatCursorResult, ChatError, ChatMessage, HistoryQuery, OutgoingMessage, RoomId,
};

use crate::{ChatClient, ChatEventHandler};

/// The message calls of one client (the SDK's `ChatManager`). Cloning is shallow.
///
/// Most examples below start, in hidden lines, from an engine `engine` with a room owned by the
/// super admin `host`, whose id is `room`, and a member `bob` (each a [`ChatClient`]).
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
    /// and 4 if the room is over its delivery threshold and dropped this message by priority;
    /// 508 if the engine's pre-send hook blocked it ([`crate::EngineBuilder::pre_send_hook`]).
    ///
    /// With an idempotency key ([`OutgoingMessage::with_idempotency_key`]), a repeat of the
    /// key by the same sender in the same room within [`crate::IDEMPOTENCY_WINDOW`] (5
    /// minutes, engine clock) returns the first message (same id and sequence number) and
    /// delivers nothing again: the retry after a 901 timeout. This holds across hibernation
    /// and restarts.
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
    ///     .send_message(
    ///         OutgoingMessage::text(room.room_id, "welcome!")
    ///             .with_priority(MessagePriority::High),
    ///     )
    ///     .await?;
    /// assert_eq!(sent.seq(), 1);
    ///
    /// // A retry with the same key gets the first message back; nothing is sent twice.
    /// let keyed = OutgoingMessage::text(room.room_id, "poll: A or B?").with_idempotency_key("q-17");
    /// let first = host.chat_manager().send_message(keyed.clone()).await?;
    /// let again = host.chat_manager().send_message(keyed).await?;
    /// assert_eq!((first.seq(), again.seq(), again.msg_id()), (2, 2, first.msg_id()));
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn send_message(&self, message: OutgoingMessage) -> Result<ChatMessage, ChatError> {
        self.client
            .core()?
            .send_message(self.client.current_user_id(), message)
            .await
    }

    /// Sends `message` to every active chat room, as a super admin (Agora's broadcast to all
    /// chat rooms); returns how many rooms got it. Active: in memory (not hibernating) with at
    /// least one member; a room that slept has no online member to see it. Each room takes it
    /// as its next message (history, replay and sequence numbers as any other) whatever its
    /// rules (mutes, membership, windows, the delivery threshold), and it skips the pre-send
    /// hook; its room id and any idempotency key are ignored.
    ///
    /// Fails with 703 for anyone but a super admin, 500/510 for a malformed message, and 4 past
    /// `Limits::broadcasts_per_window` (10 per minute by default, for all super admins).
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// use roomcast::{CreateChatRoomOptions, Engine, OutgoingMessage, RoomId};
    /// let engine = Engine::builder().build().await?;
    /// engine.add_super_admin("ops").await?;
    /// let ops = engine.login("ops").await?;
    /// for name in ["stream", "side"] {
    ///     ops.chat_room_manager().create_chat_room(CreateChatRoomOptions::new(name)).await?;
    /// }
    /// let notice = OutgoingMessage::text(RoomId::from_u64(0), "maintenance at 10:00");
    /// assert_eq!(ops.chat_manager().broadcast_to_chat_rooms(notice.clone()).await?, 2);
    /// let viewer = engine.login("viewer").await?;
    /// let refused = viewer.chat_manager().broadcast_to_chat_rooms(notice).await;
    /// assert_eq!(refused.unwrap_err().code(), 703);
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn broadcast_to_chat_rooms(
        &self,
        message: OutgoingMessage,
    ) -> Result<usize, ChatError> {
        self.client
            .core()?
            .broadcast(self.client.current_user_id(), message)
            .await
    }

    /// A page of a room's retained history (the SDK's `fetchHistoryMessages`), for a member of
    /// the room (702 otherwise). `HistoryQuery::newest(n)` pages back from the newest;
    /// `HistoryQuery::after(seq, n)` fetches what came after the last message seen, without gaps
    /// or duplicates while it is retained. The page size is 1 to the engine's `history_page_max`
    /// (200 by default; 110 otherwise).
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
    /// # for text in ["one", "two", "three"] {
    /// #     let message = roomcast::OutgoingMessage::text(room, text);
    /// #     host.chat_manager().send_message(message).await?;
    /// # }
    /// use roomcast::HistoryQuery;
    /// // "one", "two" and "three" were sent, with sequence numbers 1, 2 and 3.
    /// let chat = bob.chat_manager();
    /// let newest = chat.fetch_history_messages(&room, HistoryQuery::newest(2)).await?;
    /// let texts: Vec<&str> = newest.data.iter().filter_map(|m| m.text()).collect();
    /// assert_eq!(texts, ["three", "two"]); // newest first
    /// let after = chat.fetch_history_messages(&room, HistoryQuery::after(1, 50)).await?;
    /// let texts: Vec<&str> = after.data.iter().filter_map(|m| m.text()).collect();
    /// assert_eq!(texts, ["two", "three"]); // what came after seq 1, oldest first
    /// let outsider = engine.login("carol").await?.chat_manager();
    /// let err = outsider.fetch_history_messages(&room, HistoryQuery::newest(2)).await;
    /// assert_eq!(err.unwrap_err().code(), 702);
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
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

    /// Recalls message `seq` of a room (the SDK's `recallMessage`; roomcast names a message by
    /// its sequence number in the room, [`ChatMessage::seq`]). Its sender may recall it within
    /// the recall window (`Limits::message_recall_window`, 2 minutes by default; 504,
    /// MESSAGE_RECALL_TIME_LIMIT, after it); the owner and admins delete any message at any time
    /// (a moderation act, in the audit log; [`crate::ChatRoomManager::delete_chat_room_message`]
    /// gives it a reason). The other members get `on_messages_recalled` (a
    /// [`crate::ChatRoomEvent::MessageRecalled`] on event streams); history and local copies
    /// show the message recalled, its body gone from the store; a pin of it goes. Recalling a
    /// recalled message changes nothing.
    ///
    /// Fails with 702 if the caller is not in the room, 703 for someone else's message (a
    /// member), 500 if the room retains no message `seq`.
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
    /// let chat = bob.chat_manager();
    /// let sent = chat.send_message(OutgoingMessage::text(room, "oops")).await?;
    /// chat.recall_message(&room, sent.seq()).await?;
    /// let page = chat.fetch_history_messages(&room, HistoryQuery::newest(1)).await?;
    /// assert!(page.data[0].is_recalled());
    /// assert_eq!(page.data[0].text(), Some("")); // the body is gone
    /// // Someone else's message: only the owner and admins may delete it.
    /// let theirs = host.chat_manager().send_message(OutgoingMessage::text(room, "hi")).await?;
    /// assert_eq!(chat.recall_message(&room, theirs.seq()).await.unwrap_err().code(), 703);
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn recall_message(&self, room_id: &RoomId, seq: u64) -> Result<(), ChatError> {
        self.client
            .core()?
            .recall_message(self.client.current_user_id(), *room_id, seq, None, false)
            .await
    }

    /// This user's local copy of a room's conversation (the SDK's `getConversation`): the
    /// messages of the room from when it joined to when it left, kept after it leaves only if
    /// its `ChatOptions::delete_messages_on_exit` is false.
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
    /// use roomcast::OutgoingMessage;
    /// let conversation = bob.chat_manager().get_conversation(&room);
    /// assert_eq!(conversation.room_id(), room);
    /// host.chat_manager().send_message(OutgoingMessage::text(room, "hello")).await?;
    /// let messages = conversation.load_messages(None, 10).await?;
    /// assert_eq!(messages[0].text(), Some("hello"));
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn get_conversation(&self, room_id: &RoomId) -> Conversation {
        Conversation {
            client: self.client.clone(),
            room_id: *room_id,
        }
    }

    /// Registers a message handler under `id`, replacing any with the same id.
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
    /// use roomcast::{ChatEventHandler, ChatMessage, OutgoingMessage};
    /// use tokio::sync::mpsc;
    ///
    /// struct Inbox(mpsc::UnboundedSender<String>);
    /// impl ChatEventHandler for Inbox {
    ///     fn on_messages_received(&self, messages: &[ChatMessage]) {
    ///         for message in messages {
    ///             let _ = self.0.send(message.text().unwrap_or_default().to_string());
    ///         }
    ///     }
    /// }
    ///
    /// let (tx, mut inbox) = mpsc::unbounded_channel();
    /// bob.chat_manager().add_event_handler("inbox", Inbox(tx));
    /// host.chat_manager().send_message(OutgoingMessage::text(room, "hello")).await?;
    /// let received = tokio::time::timeout(std::time::Duration::from_secs(10), inbox.recv()).await;
    /// assert_eq!(received.unwrap().as_deref(), Some("hello"));
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
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
    ///
    /// ```
    /// # struct Inbox(tokio::sync::mpsc::UnboundedSender<roomcast::ChatMessage>);
    /// # impl roomcast::ChatEventHandler for Inbox {
    /// #     fn on_messages_received(&self, messages: &[roomcast::ChatMessage]) {
    /// #         for message in messages {
    /// #             let _ = self.0.send(message.clone());
    /// #         }
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
    /// use roomcast::OutgoingMessage;
    /// use std::time::Duration;
    /// use tokio::sync::mpsc;
    /// // `Inbox` sends each message it gets to its channel, as in `add_event_handler`.
    /// let chat = bob.chat_manager();
    /// let (tx, mut removed) = mpsc::unbounded_channel();
    /// let (tx2, mut kept) = mpsc::unbounded_channel();
    /// chat.add_event_handler("first", Inbox(tx));
    /// chat.add_event_handler("second", Inbox(tx2));
    /// assert!(chat.remove_event_handler("first"));
    /// assert!(!chat.remove_event_handler("first")); // nothing under that id any more
    /// host.chat_manager().send_message(OutgoingMessage::text(room, "hello")).await?;
    /// // Handlers are called in the order they were added: once "second" has the message,
    /// // "first" would have had it.
    /// let delivered = tokio::time::timeout(Duration::from_secs(10), kept.recv()).await;
    /// assert!(delivered.unwrap().is_some());
    /// assert!(removed.try_recv().is_err());
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn remove_event_handler(&self, id: &str) -> bool {
        self.client.session().remove_chat_handler(id)
    }
}

/// Most messages [`Conversation::load_messages`] loads at once.
pub const LOAD_MESSAGES_MAX: u32 = 400;

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
    /// let conversation = bob.chat_manager().get_conversation(&room);
    /// assert_eq!(conversation.room_id(), room);
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn room_id(&self) -> RoomId {
        self.room_id
    }

    /// Up to `count` messages of the copy (1 to [`LOAD_MESSAGES_MAX`]; 110 otherwise), newest
    /// first; only those
    /// older than `before` (a sequence number) if given (the SDK's `loadMessages`).
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
    /// # for text in ["one", "two", "three"] {
    /// #     let message = roomcast::OutgoingMessage::text(room, text);
    /// #     host.chat_manager().send_message(message).await?;
    /// # }
    /// // "one", "two" and "three" were sent while bob was in the room.
    /// let conversation = bob.chat_manager().get_conversation(&room);
    /// let newest = conversation.load_messages(None, 2).await?;
    /// let texts: Vec<&str> = newest.iter().filter_map(|m| m.text()).collect();
    /// assert_eq!(texts, ["three", "two"]); // newest first
    /// let older = conversation.load_messages(Some(newest[1].seq()), 10).await?;
    /// assert_eq!(older[0].text(), Some("one"));
    /// assert_eq!(older.len(), 1);
    /// assert_eq!(conversation.load_messages(None, 0).await.unwrap_err().code(), 110);
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn load_messages(
        &self,
        before: Option<u64>,
        count: u32,
    ) -> Result<Vec<ChatMessage>, ChatError> {
        if count == 0 || count > LOAD_MESSAGES_MAX {
            return Err(ChatError::InvalidParam(format!(
                "load 1 to {LOAD_MESSAGES_MAX} messages at a time"
            )));
        }
        self.client
            .core()?
            .load_local_messages(
                self.client.current_user_id(),
                self.room_id,
                before,
                count as usize,
            )
            .await
    }
}
