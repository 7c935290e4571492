//! The pure chat-room model of roomcast.
//!
//! **Architecture Invariant:** this crate does no IO, spawns nothing, has no async code and names
//! neither actix nor sled. Every room rule lives here, as plain functions over plain data, so that
//! each rule is testable without an actor or a store. The engine is a thin shell that calls
//! [`Room::apply`], persists what changed and delivers the resulting events.

#![forbid(unsafe_code)]

mod attributes;
mod audit;
mod error;
mod event;
mod gate;
mod history;
mod id;
mod limits;
mod live;
mod message;
mod moderation;
mod page;
mod recall;
mod room;
#[cfg(test)]
mod test_support;

pub use attributes::{
    AttributeFailures, RoomAttribute, SetAttributes, MAX_KEYS_PER_CALL, MAX_KEYS_PER_ROOM,
    MAX_KEY_CHARS, MAX_VALUE_CHARS,
};
pub use audit::{check_reason, AuditAction, AuditEntry, REASON_MAX_CHARS};
pub use error::{ChatError, ErrorCode, StorageFailure};
pub use event::{Audience, ChatRoomEvent, LeaveReason, Outgoing};
pub use gate::{DeliveryGate, RoomMessageStats};
pub use history::{ChatCursorResult, History, HistoryQuery, SearchDirection};
pub use id::{RoomId, UserId};
pub use limits::{Limits, RoomLimits};
pub use live::{LiveModeration, Pin, UNTIL_LIFTED};
pub use message::{
    AttributeValue, ChatMessage, MessageBody, MessageData, MessageId, MessagePriority,
    OutgoingMessage, Recall, IDEMPOTENCY_KEY_MAX_BYTES, IDEMPOTENCY_WINDOW,
};
pub use moderation::{
    check_permission, BlockedMember, MessageRef, Moderation, MuteDuration, MutedMember, Operation,
    HOLD_RANGE, MAX_ADMINS,
};
pub use page::{check_page, check_page_size, ChatPageResult, LIST_PAGE_MAX};
pub use room::{
    duration_ms, ms_to_timestamp, ChatRoom, ChatRoomPermissionType, Command, Effects, Room,
    RoomRecord, RoomSpec, Timer, TimerKind, Timestamp,
};
