//! # roomcast
//!
//! An embedded, in-process chat-room engine with the Agora Chat SDK's chat-room API. A Rust
//! service (an actix-web or axum WebSocket server, a game server) links roomcast and gets
//! Agora-style chat rooms, rooms without strict membership where thousands of viewers chat in
//! real time, without running a chat server.
//!
//! The API follows the SDK's in Rust naming: [`Engine`] (what Agora runs as a service),
//! [`ChatClient`] (one logged-in user), [`ChatRoomManager`] (the chat-room calls),
//! [`ChatRoomEventHandler`] (the callbacks), [`ChatOptions`], [`ChatError`] (with Agora's codes)
//! and [`ChatPageResult`].
//!
//! ```
//! # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
//! use roomcast::{ChatRoomEventHandler, CreateChatRoomOptions, Engine, RoomId, UserId};
//!
//! struct Greeter;
//! impl ChatRoomEventHandler for Greeter {
//!     fn on_member_joined_from_chat_room(&self, room_id: &RoomId, participant: &UserId) {
//!         println!("{participant} joined {room_id}");
//!     }
//! }
//!
//! let engine = Engine::builder().build().await?; // a temporary store
//! engine.add_super_admin("alice").await?;
//! let alice = engine.login("alice").await?;
//! let rooms = alice.chat_room_manager();
//! rooms.add_event_handler("greeter", Greeter);
//! let room = rooms.create_chat_room(CreateChatRoomOptions::new("lobby")).await?;
//!
//! let bob = engine.login("bob").await?;
//! bob.chat_room_manager().join_chat_room(&room.room_id).await?;
//! let page = bob.chat_room_manager().fetch_public_chat_rooms(1, 20, None).await?;
//! assert_eq!(page.data[0].room_id, room.room_id);
//!
//! bob.chat_room_manager().leave_chat_room(&room.room_id).await?;
//! rooms.destroy_chat_room(&room.room_id).await?;
//! engine.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! See `docs/ARCHITECTURE.md` for how it is built and `docs/semantics.md` for its guarantees.

#![forbid(unsafe_code)]

#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

mod chat_manager;
mod client;
mod engine;
mod moderation;
mod options;
mod room_manager;
pub mod store;

pub use chat_manager::{ChatManager, Conversation, LOAD_MESSAGES_MAX};
pub use client::ChatClient;
pub use engine::{Engine, EngineBuilder};
pub use options::ChatOptions;
pub use room_manager::{ChatRoomManager, CreateChatRoomOptions};
/// Cluster mode's configuration: the NATS servers, the cluster's name, this node's id, the
/// room lease's time to live and the call timeout between nodes.
#[cfg(feature = "cluster")]
pub use roomcast_cluster::ClusterConfig;

pub use roomcast_engine::{
    dispatch_callback, ChatEventHandler, ChatRoomEventHandler, ClientEvent, Clock, Durability,
    ManualClock, OnHookFailure, PreSendDecision, PreSendFuture, PreSendHook, RoomStats,
    SystemClock, PRE_SEND_TIMEOUT,
};

/// See [`ChatClient::events`] for runnable examples of this contract: reading, falling behind,
/// ending.
pub use roomcast_engine::EventStream;
pub use roomcast_model::{
    check_permission, AttributeFailures, AttributeValue, AuditAction, AuditEntry, BlockedMember,
    ChatCursorResult, ChatError, ChatMessage, ChatPageResult, ChatRoom, ChatRoomEvent,
    ChatRoomPermissionType, ErrorCode, HistoryQuery, LeaveReason, Limits, MessageBody, MessageData,
    MessageId, MessagePriority, MuteDuration, MutedMember, Operation, OutgoingMessage, Pin, Recall,
    RoomId, RoomLimits, RoomMessageStats, SearchDirection, SetAttributes, StorageFailure,
    Timestamp, UserId, HOLD_RANGE, IDEMPOTENCY_KEY_MAX_BYTES, IDEMPOTENCY_WINDOW, LIST_PAGE_MAX,
    REASON_MAX_CHARS,
};

/// Compile-time checks that the public handles can be shared across threads and tasks.
#[allow(dead_code)]
trait AssertSendSyncClone: Send + Sync + Clone + 'static {}
impl AssertSendSyncClone for Engine {}
impl AssertSendSyncClone for ChatClient {}
impl AssertSendSyncClone for ChatRoomManager {}
impl AssertSendSyncClone for ChatManager {}
#[allow(dead_code)]
trait AssertSend: Send + 'static {}
impl AssertSend for EventStream {}
