//! Chat-room messages: what a member sends and what every other member receives.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{ChatError, RoomId, Timestamp, UserId};

/// A message's engine-wide unique id. Ids grow with time: a later message has a larger id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MessageId(u64);

impl MessageId {
    /// Wraps a raw id.
    pub const fn from_u64(raw: u64) -> MessageId {
        MessageId(raw)
    }

    /// The raw number.
    pub const fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({})", self.0)
    }
}

/// A message's priority in a chat room (the SDK's `ChatRoomMessagePriority`). Under overload a
/// room drops low first, then normal, then high.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum MessagePriority {
    /// Dropped first.
    Low,
    /// The default.
    Normal,
    /// Dropped last. Messages from the owner, admins and allow-listed members count as high.
    High,
}

/// A message's content (the SDK's message bodies that chat rooms carry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageBody {
    /// A text message.
    Text {
        /// The text.
        content: String,
    },
    /// A custom message: an application-defined event name with key-value parameters.
    Custom {
        /// The event name.
        event: String,
        /// The parameters.
        params: BTreeMap<String, String>,
    },
}

impl MessageBody {
    fn size(&self) -> usize {
        match self {
            MessageBody::Text { content } => content.len(),
            MessageBody::Custom { event, params } => {
                event.len() + params.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
            }
        }
    }
}

/// The value of a message's extension attribute (the SDK's `attributes`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AttributeValue {
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// A string.
    String(String),
    /// A JSON document, kept as text.
    Json(String),
}

impl AttributeValue {
    fn size(&self) -> usize {
        match self {
            AttributeValue::Bool(_) => 1,
            AttributeValue::Int(_) | AttributeValue::Float(_) => 8,
            AttributeValue::String(s) | AttributeValue::Json(s) => s.len(),
        }
    }
}

/// A message to send to a room. The engine assigns the id, sequence number and time.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct OutgoingMessage {
    /// The room to send to.
    pub room_id: RoomId,
    /// The content.
    pub body: MessageBody,
    /// Extension attributes. Default none.
    pub attributes: BTreeMap<String, AttributeValue>,
    /// The priority. Default normal.
    pub priority: MessagePriority,
    /// The client's idempotency key (Centrifugo's): a repeat of the same key by the same sender
    /// in the same room within [`IDEMPOTENCY_WINDOW`] returns the first message and delivers
    /// nothing again. Default none. 1 to [`IDEMPOTENCY_KEY_MAX_BYTES`] bytes, no control
    /// characters (110 otherwise).
    pub idempotency_key: Option<String>,
}

/// How long a room remembers a message's idempotency key (engine clock): a retry within this
/// window returns the first message.
pub const IDEMPOTENCY_WINDOW: std::time::Duration = std::time::Duration::from_secs(5 * 60);

/// Longest idempotency key, in bytes.
pub const IDEMPOTENCY_KEY_MAX_BYTES: usize = 128;

impl OutgoingMessage {
    /// A text message to `room_id` (the SDK's `createTxtSendMessage`).
    pub fn text(room_id: RoomId, content: impl Into<String>) -> OutgoingMessage {
        OutgoingMessage {
            room_id,
            body: MessageBody::Text {
                content: content.into(),
            },
            attributes: BTreeMap::new(),
            priority: MessagePriority::Normal,
            idempotency_key: None,
        }
    }

    /// A custom message to `room_id` (the SDK's `createCustomSendMessage`).
    pub fn custom(
        room_id: RoomId,
        event: impl Into<String>,
        params: BTreeMap<String, String>,
    ) -> OutgoingMessage {
        OutgoingMessage {
            room_id,
            body: MessageBody::Custom {
                event: event.into(),
                params,
            },
            attributes: BTreeMap::new(),
            priority: MessagePriority::Normal,
            idempotency_key: None,
        }
    }

    /// Sets the priority.
    pub fn with_priority(mut self, priority: MessagePriority) -> Self {
        self.priority = priority;
        self
    }

    /// Sets the idempotency key (see [`OutgoingMessage::idempotency_key`]): a retry of this
    /// message with the same key, after a timeout say, is sent at most once.
    pub fn with_idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Adds an extension attribute.
    pub fn with_attribute(mut self, key: impl Into<String>, value: AttributeValue) -> Self {
        self.attributes.insert(key.into(), value);
        self
    }

    /// The size that counts against the limit: the body plus the attributes' keys and values,
    /// in bytes.
    pub fn size(&self) -> usize {
        self.body.size()
            + self
                .attributes
                .iter()
                .map(|(k, v)| k.len() + v.size())
                .sum::<usize>()
    }

    /// Checks the message's form: 500 for an empty text or event name, 510 if over `max_bytes`,
    /// 110 for a malformed idempotency key.
    pub fn validate(&self, max_bytes: usize) -> Result<(), ChatError> {
        if let Some(key) = &self.idempotency_key {
            if key.is_empty()
                || key.len() > IDEMPOTENCY_KEY_MAX_BYTES
                || key.chars().any(char::is_control)
            {
                return Err(ChatError::InvalidParam(format!(
                    "an idempotency key has 1 to {IDEMPOTENCY_KEY_MAX_BYTES} bytes and no control characters"
                )));
            }
        }
        match &self.body {
            MessageBody::Text { content } if content.is_empty() => {
                return Err(ChatError::MessageInvalid("empty text".into()))
            }
            MessageBody::Custom { event, .. } if event.is_empty() => {
                return Err(ChatError::MessageInvalid("empty custom event name".into()))
            }
            _ => {}
        }
        let size = self.size();
        if size > max_bytes {
            return Err(ChatError::MessageSizeLimit {
                size,
                limit: max_bytes,
            });
        }
        Ok(())
    }
}

/// A message as the room sent it (the SDK's `ChatMessage`). Cloning is shallow: one message
/// delivered to ten thousand members is one allocation.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage(Arc<MessageData>);

/// The fields of a [`ChatMessage`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageData {
    /// Unique id.
    pub msg_id: MessageId,
    /// The room.
    pub room_id: RoomId,
    /// The sender.
    pub from: UserId,
    /// The room's sequence number: 1 for the room's first message, then +1 each. Members see
    /// a room's messages in this order.
    pub seq: u64,
    /// When the room accepted it (ms since the Unix epoch).
    pub server_time: Timestamp,
    /// The content.
    pub body: MessageBody,
    /// Extension attributes.
    pub attributes: BTreeMap<String, AttributeValue>,
    /// The priority it was sent with.
    pub priority: MessagePriority,
    /// Set once the message was recalled (by its sender) or deleted (by the owner or an
    /// admin): its body and attributes are gone, from the store too.
    pub recalled: Option<Recall>,
    /// True if its sender was shadow-banned when the room accepted it: only the sender (which
    /// sees it unmarked) and the owner and admins (marked) ever see it.
    pub shadowed: bool,
    /// Hold for review (Twitch's chat delay): set if its sender was not the owner or an admin
    /// while the room held messages; members who are not staff see it (live, in history, on
    /// replay and in local copies) only from then on (engine clock). Its sender and the staff see
    /// it at once, the staff marked ([`ChatMessage::is_held`]).
    pub held_until: Option<Timestamp>,
}

/// How a message was recalled: by whom and when. A recalled message keeps its id, sender,
/// sequence number and time; its body is an empty text and its attributes are gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Recall {
    /// Who recalled it: its sender, or the owner or an admin who deleted it.
    pub by: UserId,
    /// When (engine clock, ms since the Unix epoch).
    pub at: Timestamp,
}

impl Recall {
    /// A recall by `by` at `at`.
    pub fn new(by: UserId, at: Timestamp) -> Recall {
        Recall { by, at }
    }
}

impl MessageData {
    /// Marks the message recalled by `recall`, dropping its body and attributes (a recalled
    /// message has an empty text body).
    pub fn recall(&mut self, recall: Recall) {
        self.body = MessageBody::Text {
            content: String::new(),
        };
        self.attributes.clear();
        self.recalled = Some(recall);
    }
}

impl ChatMessage {
    /// The same message, recalled by `recall` (body and attributes gone).
    pub fn recalled_by(&self, recall: Recall) -> ChatMessage {
        let mut data = (*self.0).clone();
        data.recall(recall);
        ChatMessage::new(data)
    }

    /// How the message was recalled, if it was (its body is then gone).
    pub fn recalled(&self) -> Option<&Recall> {
        self.0.recalled.as_ref()
    }

    /// True if the message was recalled or deleted.
    pub fn is_recalled(&self) -> bool {
        self.0.recalled.is_some()
    }

    /// True if its sender was shadow-banned when the room accepted it (Stream's shadow ban).
    /// Only the owner and admins see the mark: they alone, besides its sender, receive such a
    /// message, and its sender sees it as any other.
    pub fn is_shadowed(&self) -> bool {
        self.0.shadowed
    }

    /// True if the room held it for review (see [`MessageData::held_until`]). The owner and
    /// admins, who receive it at once, see the mark; other members see it only once released,
    /// unmarked.
    pub fn is_held(&self) -> bool {
        self.0.held_until.is_some()
    }

    /// Until when the room held it for review, if it did (engine clock).
    pub fn held_until(&self) -> Option<Timestamp> {
        self.0.held_until
    }

    /// True if, at `now`, the message is still held from members who are not staff.
    pub fn is_held_at(&self, now: Timestamp) -> bool {
        self.0.held_until.is_some_and(|until| now < until)
    }

    /// The message as `viewer` sees it at `now` (`staff`: the owner or an admin of its room):
    /// `None` if it is hidden from `viewer` (a shadowed message of someone else, or a message
    /// still held for review, to a member who is not staff), without the shadow mark for its own
    /// sender and without the hold mark once released, as it is otherwise.
    pub fn seen_by(&self, viewer: &UserId, staff: bool, now: Timestamp) -> Option<ChatMessage> {
        if staff {
            Some(self.clone())
        } else if self.0.from == *viewer {
            Some(self.unmarked())
        } else if self.0.shadowed || self.is_held_at(now) {
            None
        } else {
            Some(self.released())
        }
    }

    /// The same message without the hold mark (as members who are not staff see it once it is
    /// released).
    pub fn released(&self) -> ChatMessage {
        if self.0.held_until.is_none() {
            return self.clone();
        }
        let mut data = (*self.0).clone();
        data.held_until = None;
        ChatMessage::new(data)
    }

    /// The same message without the shadow mark (as its sender sees it).
    pub fn unmarked(&self) -> ChatMessage {
        if !self.0.shadowed {
            return self.clone();
        }
        let mut data = (*self.0).clone();
        data.shadowed = false;
        ChatMessage::new(data)
    }

    /// Wraps message data.
    pub fn new(data: MessageData) -> ChatMessage {
        ChatMessage(Arc::new(data))
    }

    /// Unique id.
    pub fn msg_id(&self) -> MessageId {
        self.0.msg_id
    }
    /// The room.
    pub fn room_id(&self) -> RoomId {
        self.0.room_id
    }
    /// The sender.
    pub fn from(&self) -> &UserId {
        &self.0.from
    }
    /// The room's sequence number.
    pub fn seq(&self) -> u64 {
        self.0.seq
    }
    /// Server time (ms since the Unix epoch).
    pub fn server_time(&self) -> Timestamp {
        self.0.server_time
    }
    /// The content.
    pub fn body(&self) -> &MessageBody {
        &self.0.body
    }
    /// The text, for a text message.
    pub fn text(&self) -> Option<&str> {
        match &self.0.body {
            MessageBody::Text { content } => Some(content),
            MessageBody::Custom { .. } => None,
        }
    }
    /// Extension attributes.
    pub fn attributes(&self) -> &BTreeMap<String, AttributeValue> {
        &self.0.attributes
    }
    /// The priority it was sent with.
    pub fn priority(&self) -> MessagePriority {
        self.0.priority
    }
    /// All fields.
    pub fn data(&self) -> &MessageData {
        &self.0
    }
}

impl fmt::Debug for ChatMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The body is left out on purpose: message content is not for logs.
        f.debug_struct("ChatMessage")
            .field("msg_id", &self.0.msg_id)
            .field("room_id", &self.0.room_id)
            .field("from", &self.0.from)
            .field("seq", &self.0.seq)
            .field("priority", &self.0.priority)
            .field("recalled", &self.0.recalled)
            .field("shadowed", &self.0.shadowed)
            .field("held_until", &self.0.held_until)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        let room = RoomId::from_u64(1);
        let cases: Vec<(OutgoingMessage, Option<u32>)> = vec![
            (OutgoingMessage::text(room, "hi"), None),
            (OutgoingMessage::text(room, ""), Some(500)),
            (
                OutgoingMessage::custom(room, "", BTreeMap::new()),
                Some(500),
            ),
            (OutgoingMessage::text(room, "x".repeat(5120)), None),
            (OutgoingMessage::text(room, "x".repeat(5121)), Some(510)),
            (
                OutgoingMessage::text(room, "x".repeat(5000))
                    .with_attribute("k", AttributeValue::String("v".repeat(200))),
                Some(510),
            ),
            (
                OutgoingMessage::custom(
                    room,
                    "gift",
                    BTreeMap::from([("k".to_string(), "v".repeat(5200))]),
                ),
                Some(510),
            ),
            (
                OutgoingMessage::text(room, "hi").with_idempotency_key("k-1"),
                None,
            ),
            (
                OutgoingMessage::text(room, "hi").with_idempotency_key(""),
                Some(110),
            ),
            (
                OutgoingMessage::text(room, "hi").with_idempotency_key("x".repeat(129)),
                Some(110),
            ),
            (
                OutgoingMessage::text(room, "hi").with_idempotency_key("a\nb"),
                Some(110),
            ),
        ];
        for (m, expect) in cases {
            assert_eq!(m.validate(5120).err().map(|e| e.code()), expect, "{m:?}");
        }
    }
}
