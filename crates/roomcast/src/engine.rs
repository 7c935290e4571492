//! `Engine` and its builder: opening, super admins, login, shutdown.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use roomcast_engine::{Core, CoreConfig, Location, OnHookFailure, PreSendConfig, RoomStats};
use roomcast_model::{ChatError, Limits, RoomId, UserId};

use crate::{ChatClient, ChatOptions, Clock, Durability};

/// Builds an [`Engine`]. Every setting has a default: a temporary store, Agora's limits, the
/// system clock.
#[derive(Clone)]
pub struct EngineBuilder {
    config: CoreConfig,
    options: ChatOptions,
    /// The pre-send timeout and policy, kept for a hook set later.
    pending_hook_timeout: Option<(Duration, OnHookFailure)>,
}

impl std::fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineBuilder")
            .field("config", &self.config)
            .field("options", &self.options)
            .finish()
    }
}

impl EngineBuilder {
    /// Cluster mode (the `cluster` feature): this engine is one node of a cluster on NATS
    /// JetStream. A room is run by one node at a time and reached from every node: a user
    /// logged in on any node joins, chats and moderates any room. Rooms, lists, attributes and
    /// messages live in JetStream (the local store only caches the rooms this node runs). See
    /// `docs/cluster.md`.
    ///
    /// `build` fails if the cluster cannot be reached.
    #[cfg(feature = "cluster")]
    pub fn cluster(mut self, config: roomcast_cluster::ClusterConfig) -> Self {
        self.config.cluster = Some(config);
        self
    }

    /// Keeps the store in `dir` (created if missing), so rooms survive a restart. Without this the
    /// store is temporary and deleted when the engine stops.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// use roomcast::{CreateChatRoomOptions, Engine};
    /// let dir = tempfile::tempdir().unwrap();
    /// let engine = Engine::builder().data_dir(dir.path()).build().await?;
    /// engine.add_super_admin("host").await?;
    /// let rooms = engine.login("host").await?.chat_room_manager();
    /// let room = rooms.create_chat_room(CreateChatRoomOptions::new("kept")).await?;
    /// engine.shutdown().await;
    ///
    /// // An engine opened on the same directory later has the room and the super admin.
    /// let engine = Engine::builder().data_dir(dir.path()).build().await?;
    /// let rooms = engine.login("host").await?.chat_room_manager();
    /// assert_eq!(rooms.fetch_chat_room_info(&room.room_id).await?.name, "kept");
    /// assert_eq!(engine.super_admins().len(), 1);
    /// engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.store.location = Location::Dir(dir.into());
        self
    }

    /// Uses a temporary store (the default).
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// use roomcast::Engine;
    /// let dir = tempfile::tempdir().unwrap();
    /// let keep_data = false; // say, from the command line
    /// let mut builder = Engine::builder().data_dir(dir.path());
    /// if !keep_data {
    ///     builder = builder.temporary(); // replaces the data_dir
    /// }
    /// let engine = builder.build().await?;
    /// engine.add_super_admin("host").await?;
    /// engine.shutdown().await;
    /// assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing was written to dir");
    /// # Ok(()) }
    /// ```
    pub fn temporary(mut self) -> Self {
        self.config.store.location = Location::Temporary;
        self
    }

    /// When a write counts as done. Default [`Durability::GroupCommit`]: a call that changes
    /// stored state returns `Ok` only after the change is flushed and fdatasync'ed (durable
    /// against a power cut); [`Durability::FlushOnly`] skips the fdatasync (durable against a
    /// crash of the process); [`Durability::Buffered`] acknowledges at once.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// use roomcast::{Durability, Engine};
    /// let dir = tempfile::tempdir().unwrap();
    /// let engine = Engine::builder()
    ///     .data_dir(dir.path())
    ///     .durability(Durability::FlushOnly) // survives a crash of the process, not a power cut
    ///     .build()
    ///     .await?;
    /// engine.add_super_admin("host").await?; // returns once the change is flushed
    /// engine.shutdown().await;
    ///
    /// let engine = Engine::builder().data_dir(dir.path()).build().await?;
    /// assert_eq!(engine.super_admins()[0].as_str(), "host");
    /// engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn durability(mut self, durability: Durability) -> Self {
        self.config.store.durability = durability;
        self
    }

    /// The engine's limits (room name length, max members, rooms per engine...).
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// use roomcast::{CreateChatRoomOptions, Engine, Limits};
    /// let engine = Engine::builder()
    ///     .limits(Limits::default().with_room_name_max_chars(16))
    ///     .build()
    ///     .await?;
    /// assert_eq!(engine.limits().room_name_max_chars, 16);
    /// engine.add_super_admin("host").await?;
    /// let rooms = engine.login("host").await?.chat_room_manager();
    /// let too_long = CreateChatRoomOptions::new("seventeen chars!!");
    /// assert_eq!(rooms.create_chat_room(too_long).await.unwrap_err().code(), 110);
    /// engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn limits(mut self, limits: Limits) -> Self {
        self.config.limits = limits;
        self
    }

    /// The default [`ChatOptions`] of every client.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// use roomcast::{ChatOptions, CreateChatRoomOptions, Engine};
    /// let engine = Engine::builder()
    ///     .chat_options(ChatOptions::default().with_chat_room_owner_leave_allowed(false))
    ///     .build()
    ///     .await?;
    /// engine.add_super_admin("host").await?;
    /// let host = engine.login("host").await?; // gets the engine's default options
    /// assert!(!host.options().chat_room_owner_leave_allowed);
    /// let rooms = host.chat_room_manager();
    /// let room = rooms.create_chat_room(CreateChatRoomOptions::new("stream")).await?;
    /// assert_eq!(rooms.leave_chat_room(&room.room_id).await.unwrap_err().code(), 706);
    /// engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn chat_options(mut self, options: ChatOptions) -> Self {
        self.options = options;
        self
    }

    /// The clock the engine reads (creation times, expiries, grace periods). Tests pass a
    /// [`crate::ManualClock`] and move it forward instead of sleeping.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// use roomcast::{CreateChatRoomOptions, Engine, ManualClock};
    /// use std::time::Duration;
    /// let clock = ManualClock::new(1_700_000_000_000); // ms since the Unix epoch
    /// let engine = Engine::builder().clock(clock.clone()).build().await?;
    /// engine.add_super_admin("host").await?;
    /// let rooms = engine.login("host").await?.chat_room_manager();
    /// let first = rooms.create_chat_room(CreateChatRoomOptions::new("first")).await?;
    /// clock.advance(Duration::from_secs(60));
    /// let second = rooms.create_chat_room(CreateChatRoomOptions::new("second")).await?;
    /// assert_eq!(first.created_at, 1_700_000_000_000);
    /// assert_eq!(second.created_at, 1_700_000_060_000);
    /// engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.config.clock = Arc::new(clock);
        self
    }

    /// Capacity of each user's event queue (shared by its clients' handlers) and of each event
    /// stream (default 4,096). A consumer that falls further behind loses its oldest events and
    /// is told how many (see [`crate::EventStream`]).
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
    /// engine.add_super_admin("host").await?;
    /// let host = engine.login("host").await?;
    /// let rooms = host.chat_room_manager();
    /// let room = rooms.create_chat_room(CreateChatRoomOptions::new("r")).await?;
    /// let mut behind = host.events(); // not read while three viewers join
    /// let mut live = host.events(); // read as they join
    /// for viewer in ["ann", "ben", "cat"] {
    ///     let viewer = engine.login(viewer).await?;
    ///     viewer.chat_room_manager().join_chat_room(&room.room_id).await?;
    ///     next(&mut live).await; // once `live` has the join, `behind` has it too
    /// }
    /// // `behind` kept the two newest joins, and says first that it lost the oldest one.
    /// assert!(matches!(next(&mut behind).await, ClientEvent::Missed { count: 1 }));
    /// assert!(matches!(next_room_event(&mut behind).await,
    ///     ChatRoomEvent::MemberJoined { participant, .. } if participant.as_str() == "ben"));
    /// engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn event_queue_capacity(mut self, capacity: usize) -> Self {
        self.config.mailbox_capacity = capacity.max(1);
        self
    }

    /// Longest an engine call may take before it fails with 901 (default 30 s; `None`: no
    /// limit). The timer runs on the engine's own runtime, so pausing tokio's time in a caller's
    /// runtime does not fire it.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// use roomcast::Engine;
    /// use std::time::Duration;
    /// let engine = Engine::builder()
    ///     .call_timeout(Some(Duration::from_secs(5))) // fail with 901 rather than wait longer
    ///     .build()
    ///     .await?;
    /// engine.add_super_admin("host").await?; // well within the limit
    /// assert_eq!(engine.super_admins().len(), 1);
    /// engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn call_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.call_timeout = timeout;
        self
    }

    /// Sets the pre-send hook (Agora's pre-send callback): it sees every message before a room
    /// accepts it, the owner's and the admins' too (not a super admin's broadcast), and allows
    /// it, rejects it (the sender gets 508 with the hook's reason) or rewrites it. It runs in
    /// the sending call's task, never on a room; a room still accepts its messages in the
    /// order their sends were called, whichever hook finished first. It has
    /// [`EngineBuilder::pre_send_timeout`] to answer (default [`crate::PRE_SEND_TIMEOUT`], 2 s).
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// use roomcast::{
    ///     CreateChatRoomOptions, Engine, OutgoingMessage, PreSendDecision, PreSendFuture,
    ///     PreSendHook, UserId,
    /// };
    ///
    /// /// Rejects links, masks a word.
    /// struct Filter;
    /// impl PreSendHook for Filter {
    ///     fn pre_send<'a>(&'a self, _from: &'a UserId, m: &'a OutgoingMessage) -> PreSendFuture<'a> {
    ///         Box::pin(async move {
    ///             match m.body.clone() {
    ///                 roomcast::MessageBody::Text { content } if content.contains("http") => {
    ///                     PreSendDecision::Reject("no links".into())
    ///                 }
    ///                 roomcast::MessageBody::Text { content } if content.contains("darn") => {
    ///                     let masked = content.replace("darn", "****");
    ///                     PreSendDecision::Rewrite(OutgoingMessage::text(m.room_id, masked))
    ///                 }
    ///                 _ => PreSendDecision::Allow,
    ///             }
    ///         })
    ///     }
    /// }
    ///
    /// let engine = Engine::builder().pre_send_hook(Filter).build().await?;
    /// engine.add_super_admin("host").await?;
    /// let host = engine.login("host").await?;
    /// let room = host.chat_room_manager().create_chat_room(CreateChatRoomOptions::new("r")).await?;
    /// let chat = host.chat_manager();
    /// let sent = chat.send_message(OutgoingMessage::text(room.room_id, "darn it")).await?;
    /// assert_eq!(sent.text(), Some("**** it"));
    /// let link = chat.send_message(OutgoingMessage::text(room.room_id, "see http://x")).await;
    /// let err = link.unwrap_err();
    /// assert_eq!(err.code(), 508);
    /// assert!(err.to_string().contains("no links"));
    /// engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn pre_send_hook(mut self, hook: impl roomcast_engine::PreSendHook) -> Self {
        let (timeout, on_failure) = self
            .pending_hook_timeout
            .unwrap_or((roomcast_engine::PRE_SEND_TIMEOUT, OnHookFailure::default()));
        self.config.pre_send = Some(PreSendConfig {
            hook: Arc::new(hook),
            timeout,
            on_failure,
        });
        self
    }

    /// How long the pre-send hook may take (default 2 s), and what a hook that does not answer
    /// in time, or panics, means for its message: [`OnHookFailure::Allow`] (the default: it is
    /// sent as it is, so that a slow or failing moderation service degrades moderation rather
    /// than silencing every room) or [`OnHookFailure::Reject`] (508). Without a hook it does
    /// nothing.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// use roomcast::{
    ///     CreateChatRoomOptions, Engine, OnHookFailure, OutgoingMessage, PreSendFuture,
    ///     PreSendHook, UserId,
    /// };
    /// use std::time::Duration;
    ///
    /// /// A moderation service that is down: it never answers.
    /// struct Down;
    /// impl PreSendHook for Down {
    ///     fn pre_send<'a>(&'a self, _: &'a UserId, _: &'a OutgoingMessage) -> PreSendFuture<'a> {
    ///         Box::pin(std::future::pending())
    ///     }
    /// }
    ///
    /// let engine = Engine::builder()
    ///     .pre_send_hook(Down)
    ///     .pre_send_timeout(Duration::from_millis(50), OnHookFailure::Reject)
    ///     .build()
    ///     .await?;
    /// engine.add_super_admin("host").await?;
    /// let host = engine.login("host").await?;
    /// let room = host.chat_room_manager().create_chat_room(CreateChatRoomOptions::new("r")).await?;
    /// let sent = host.chat_manager().send_message(OutgoingMessage::text(room.room_id, "hi")).await;
    /// assert_eq!(sent.unwrap_err().code(), 508);
    /// engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn pre_send_timeout(mut self, timeout: Duration, on_failure: OnHookFailure) -> Self {
        self.pending_hook_timeout = Some((timeout, on_failure));
        if let Some(pre_send) = &mut self.config.pre_send {
            pre_send.timeout = timeout;
            pre_send.on_failure = on_failure;
        }
        self
    }

    /// How many room threads, fan-out shards and callback threads to run (default: one per
    /// core).
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// use roomcast::{CreateChatRoomOptions, Engine};
    /// let engine = Engine::builder().threads(2).build().await?; // a small machine
    /// engine.add_super_admin("host").await?;
    /// let rooms = engine.login("host").await?.chat_room_manager();
    /// let room = rooms.create_chat_room(CreateChatRoomOptions::new("lobby")).await?;
    /// assert_eq!(room.member_count, 1);
    /// engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn threads(mut self, threads: usize) -> Self {
        self.config.threads = threads;
        self
    }

    /// Opens the store and starts the engine. Works from any tokio runtime (or none: the
    /// returned future needs no particular executor).
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// use roomcast::{Engine, Limits};
    /// let engine = Engine::builder().build().await?; // a temporary store
    /// assert!(!engine.is_shut_down());
    /// assert!(engine.super_admins().is_empty());
    /// engine.shutdown().await;
    ///
    /// // Limits that make no sense are refused (110).
    /// let no_messages = Limits::default().with_room_delivery_rate(Some(0));
    /// let refused = Engine::builder().limits(no_messages).build().await;
    /// assert_eq!(refused.unwrap_err().code(), 110);
    /// # Ok(()) }
    /// ```
    pub async fn build(self) -> Result<Engine, ChatError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        // Opening reads the store; do it on a thread of its own so that the caller's executor
        // is not blocked.
        std::thread::Builder::new()
            .name("roomcast-open".into())
            .spawn(move || {
                let config = self.config;
                let opened =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Core::open(config)))
                        .unwrap_or_else(|panic| {
                            let why = panic
                                .downcast_ref::<&str>()
                                .map(|s| s.to_string())
                                .or_else(|| panic.downcast_ref::<String>().cloned())
                                .unwrap_or_else(|| "unknown panic".into());
                            Err(ChatError::General(format!(
                                "engine start-up panicked: {why}"
                            )))
                        });
                let _ = tx.send(opened);
            })
            .map_err(|e| ChatError::General(format!("cannot start a thread: {e}")))?;
        let core = rx
            .await
            .map_err(|_| ChatError::General("engine start-up failed".into()))??;
        #[cfg(feature = "cluster")]
        if let Err(e) = core.join_cluster().await {
            core.shutdown().await;
            return Err(e);
        }
        Ok(Engine {
            owner: Arc::new(EngineOwner(core.clone())),
            core,
            options: self.options,
        })
    }
}

/// An embedded roomcast engine. Cloning is shallow: every clone is the same engine.
///
/// It owns its threads (an actix System with one room thread per core, fan-out shards, a small
/// callback runtime) and a store. [`Engine::shutdown`] stops them and waits; dropping the last
/// `Engine` handle stops them too, without waiting. Clients do not keep the engine running:
/// once it is stopped, their calls fail with 900 ([`ChatError::EngineStopped`]) and their
/// handlers are released.
///
/// Some examples on its methods start, in hidden lines, from an engine `engine` with a room owned
/// by the super admin `host`, whose id is `room`, and a member `bob`.
///
/// ```
/// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
/// use roomcast::{CreateChatRoomOptions, Engine};
///
/// let engine = Engine::builder().build().await?;
/// engine.add_super_admin("alice").await?;
/// let alice = engine.login("alice").await?;
/// let room = alice
///     .chat_room_manager()
///     .create_chat_room(CreateChatRoomOptions::new("launch party"))
///     .await?;
/// let bob = engine.login("Bob").await?; // user ids are case-insensitive: this is "bob"
/// bob.chat_room_manager().join_chat_room(&room.room_id).await?;
/// let info = bob.chat_room_manager().fetch_chat_room_info(&room.room_id).await?;
/// assert_eq!(info.member_count, 2);
/// engine.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Engine {
    core: Core,
    options: ChatOptions,
    /// Stops the engine when the last `Engine` handle is dropped.
    #[allow(dead_code)]
    owner: Arc<EngineOwner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("core", &self.core)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Held by every clone of an [`Engine`]: the application's ownership of the engine. Clients do
/// not hold it, so a handler that keeps a client of its own (a reply bot) cannot keep the engine
/// running once the application dropped it.
struct EngineOwner(Core);

impl Drop for EngineOwner {
    fn drop(&mut self) {
        self.0.stop_now();
    }
}

impl Engine {
    /// A builder with every default.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// use roomcast::{Engine, Limits};
    /// let engine = Engine::builder().build().await?;
    /// assert_eq!(engine.limits(), &Limits::default());
    /// engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn builder() -> EngineBuilder {
        EngineBuilder {
            config: CoreConfig::default(),
            options: ChatOptions::default(),
            pending_hook_timeout: None,
        }
    }

    /// Makes `user` an app super admin, who may create rooms (Agora does this over REST).
    /// Durable when it returns `Ok`. 110 for a malformed user id.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// use roomcast::{CreateChatRoomOptions, Engine};
    /// let engine = Engine::builder().build().await?;
    /// let rooms = engine.login("alice").await?.chat_room_manager();
    /// let lobby = CreateChatRoomOptions::new("lobby");
    /// assert_eq!(rooms.create_chat_room(lobby.clone()).await.unwrap_err().code(), 703);
    /// engine.add_super_admin("alice").await?;
    /// assert_eq!(rooms.create_chat_room(lobby).await?.owner.as_str(), "alice");
    /// assert_eq!(engine.add_super_admin("not an id!").await.unwrap_err().code(), 110);
    /// engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn add_super_admin(&self, user: impl AsRef<str>) -> Result<(), ChatError> {
        let user = UserId::new(user.as_ref())?;
        self.core.add_super_admin(user).await
    }

    /// Takes super-admin rights from `user`; `Ok(false)` if it had none. Rooms it created stay
    /// owned by it.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// use roomcast::{CreateChatRoomOptions, Engine};
    /// let engine = Engine::builder().build().await?;
    /// engine.add_super_admin("alice").await?;
    /// let rooms = engine.login("alice").await?.chat_room_manager();
    /// let room = rooms.create_chat_room(CreateChatRoomOptions::new("lobby")).await?;
    /// assert!(engine.remove_super_admin("alice").await?);
    /// assert!(!engine.remove_super_admin("alice").await?); // it has none left
    /// let again = rooms.create_chat_room(CreateChatRoomOptions::new("another")).await;
    /// assert_eq!(again.unwrap_err().code(), 703);
    /// // The room it created is still its own.
    /// assert_eq!(rooms.fetch_chat_room_info(&room.room_id).await?.owner.as_str(), "alice");
    /// engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn remove_super_admin(&self, user: impl AsRef<str>) -> Result<bool, ChatError> {
        let user = UserId::new(user.as_ref())?;
        self.core.remove_super_admin(&user).await
    }

    /// The super admins, sorted.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// use roomcast::Engine;
    /// let engine = Engine::builder().build().await?;
    /// engine.add_super_admin("zoe").await?;
    /// engine.add_super_admin("Adam").await?;
    /// let admins = engine.super_admins();
    /// let names: Vec<&str> = admins.iter().map(|u| u.as_str()).collect();
    /// assert_eq!(names, ["adam", "zoe"]);
    /// engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn super_admins(&self) -> Vec<UserId> {
        self.core.super_admins()
    }

    /// Logs `user` in and returns its [`ChatClient`], with the engine's default options.
    ///
    /// User ids are Agora's: 1 to 64 characters of `a-z 0-9 _ - .`, case-insensitive (folded
    /// to lower case); anything else is 110.
    ///
    /// A user has one session in the engine. Logging in again returns another client on the
    /// same session: it is the same member of the same rooms, and the two clients share event
    /// handlers (registered by id, so registering an id again replaces the handler) while each
    /// stream from [`ChatClient::events`] gets every event. The latest login's
    /// `delete_messages_on_exit` is the one that applies when the user leaves a room.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # use roomcast::{CreateChatRoomOptions, Engine};
    /// # let engine = Engine::builder().build().await?;
    /// # engine.add_super_admin("host").await?;
    /// # let host = engine.login("host").await?;
    /// # let room = CreateChatRoomOptions::new("stream");
    /// # let room = host.chat_room_manager().create_chat_room(room).await?.room_id;
    /// let bob = engine.login("Bob").await?;
    /// assert_eq!(bob.current_user_id().as_str(), "bob"); // folded to lower case
    /// bob.chat_room_manager().join_chat_room(&room).await?;
    ///
    /// // Another login of bob is another client on the same session: already in the room.
    /// let bob_again = engine.login("bob").await?;
    /// let err = bob_again.chat_room_manager().join_chat_room(&room).await.unwrap_err();
    /// assert_eq!(err.code(), 701);
    /// assert_eq!(engine.login("no spaces").await.unwrap_err().code(), 110);
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn login(&self, user: impl AsRef<str>) -> Result<ChatClient, ChatError> {
        self.login_with_options(user, self.options.clone()).await
    }

    /// Like [`Engine::login`], with options for this client only.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// use roomcast::{ChatOptions, Engine};
    /// let engine = Engine::builder().build().await?;
    /// let keep = ChatOptions::default().with_delete_messages_on_exit(false);
    /// let bob = engine.login_with_options("bob", keep).await?;
    /// assert!(!bob.options().delete_messages_on_exit);
    /// let carol = engine.login("carol").await?; // the engine's defaults
    /// assert!(carol.options().delete_messages_on_exit);
    /// engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn login_with_options(
        &self,
        user: impl AsRef<str>,
        options: ChatOptions,
    ) -> Result<ChatClient, ChatError> {
        let user = UserId::new(user.as_ref())?;
        let session = self
            .core
            .open_client(user, options.delete_messages_on_exit)?;
        self.core.client_logged_in(&session).await;
        Ok(ChatClient::new(self.core.clone(), session, options))
    }

    /// A room's counters: members, online members, messages accepted and dropped by priority.
    /// The message counts are since the room was loaded; a sleeping room (see
    /// [`Engine::rooms_in_memory`]) is answered without waking it, with zero message counts.
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
    /// host.chat_manager().send_message(OutgoingMessage::text(room, "hello")).await?;
    /// bob.chat_manager().send_message(OutgoingMessage::text(room, "hi!")).await?;
    /// let stats = engine.room_stats(&room).await?;
    /// assert_eq!(stats.member_count, 2);
    /// assert_eq!(stats.online_count, 2);
    /// assert_eq!(stats.last_seq, 2);
    /// assert_eq!(stats.messages.accepted, 2);
    /// assert_eq!(stats.messages.dropped(), 0);
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn room_stats(&self, room_id: &RoomId) -> Result<RoomStats, ChatError> {
        self.core.room_stats(*room_id).await
    }

    /// Deliveries this engine dropped (since it started) because a client's event queue or
    /// event stream was full. Each such client was told how many it missed.
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
    /// use roomcast::{CreateChatRoomOptions, Engine};
    /// let engine = Engine::builder().event_queue_capacity(1).build().await?;
    /// engine.add_super_admin("host").await?;
    /// let host = engine.login("host").await?;
    /// let rooms = host.chat_room_manager();
    /// let room = rooms.create_chat_room(CreateChatRoomOptions::new("r")).await?;
    /// let _unread = host.events(); // never read: holds one event at most
    /// let mut read = host.events();
    /// for viewer in ["ann", "ben"] {
    ///     let viewer = engine.login(viewer).await?;
    ///     viewer.chat_room_manager().join_chat_room(&room.room_id).await?;
    ///     next(&mut read).await; // once `read` has the join, `_unread` has it too
    /// }
    /// assert_eq!(engine.overflowed_deliveries(), 1); // ann's join, dropped from `_unread`
    /// engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn overflowed_deliveries(&self) -> u64 {
        self.core.overflowed_deliveries()
    }

    /// Test support: makes the room's actor panic on its next call, so that a test can watch the
    /// supervisor restart it from the store. The call returns an error (903), never hangs.
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
    /// let mut bob_events = bob.events();
    /// assert_eq!(engine.inject_room_panic(&room).await.unwrap_err().code(), 903);
    /// // The supervisor restarts the room from the store, with its members; they are told.
    /// assert_eq!(
    ///     next_room_event(&mut bob_events).await,
    ///     ChatRoomEvent::ChatRoomRecovered { room_id: room, last_seq: 0 }
    /// );
    /// let info = host.chat_room_manager().fetch_chat_room_info(&room).await?;
    /// assert_eq!(info.member_count, 2);
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "fault-injection")]
    #[doc(hidden)]
    pub async fn inject_room_panic(&self, room_id: &RoomId) -> Result<(), ChatError> {
        self.core.inject_room_panic(*room_id).await
    }

    /// How many user sessions the engine holds. A session lives while the user has a client or
    /// is in a room; idle ones are dropped about once a minute (engine clock).
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// use roomcast::Engine;
    /// let engine = Engine::builder().build().await?;
    /// assert_eq!(engine.session_count(), 0);
    /// let bob = engine.login("bob").await?;
    /// let bob_again = engine.login("bob").await?; // one session per user
    /// let carol = engine.login("carol").await?;
    /// assert_eq!(engine.session_count(), 2);
    /// engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn session_count(&self) -> usize {
        self.core.session_count()
    }

    /// How many timed checks are pending (mute expiries and offline grace periods): at most one
    /// per room, member and kind, so it follows the live mutes and offline members. For
    /// monitoring.
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
    /// use std::time::Duration;
    /// let rooms = host.chat_room_manager();
    /// assert_eq!(engine.pending_timers(), 0);
    /// rooms.mute_chat_room_members(&room, ["bob"], Duration::from_secs(600)).await?;
    /// assert_eq!(engine.pending_timers(), 1); // when bob's mute ends
    /// rooms.unmute_chat_room_members(&room, ["bob"]).await?;
    /// assert_eq!(engine.pending_timers(), 0);
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn pending_timers(&self) -> usize {
        self.core.pending_timers()
    }

    /// How many rooms are in memory, for monitoring: a room leaves memory when it has been idle
    /// and without an online member for [`Limits::room_hibernate_after`] (5 minutes by
    /// default), and comes back, transparently, on its next use. Rooms of a reopened store are
    /// loaded on first use too.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// use roomcast::{CreateChatRoomOptions, Engine, ManualClock};
    /// use std::time::Duration;
    /// let clock = ManualClock::new(1_700_000_000_000);
    /// let engine = Engine::builder().clock(clock.clone()).build().await?;
    /// engine.add_super_admin("host").await?;
    /// let host = engine.login("host").await?;
    /// let rooms = host.chat_room_manager();
    /// let room = rooms.create_chat_room(CreateChatRoomOptions::new("late show")).await?.room_id;
    /// rooms.leave_chat_room(&room).await?; // nobody in it now
    /// assert_eq!(engine.rooms_in_memory(), 1);
    /// clock.advance(Duration::from_secs(6 * 60));
    /// # let deadline = std::time::Instant::now() + Duration::from_secs(10);
    /// while engine.rooms_in_memory() > 0 {
    /// #   assert!(std::time::Instant::now() < deadline, "the room hibernates");
    ///     tokio::task::yield_now().await; // the sweep runs on the engine's threads
    /// }
    /// // Its next use loads it again, as it was.
    /// let info = rooms.fetch_chat_room_info(&room).await?;
    /// assert_eq!(info.name, "late show");
    /// assert_eq!(engine.rooms_in_memory(), 1);
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn rooms_in_memory(&self) -> usize {
        self.core.rooms_in_memory()
    }

    /// The engine's limits.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// use roomcast::Engine;
    /// use std::time::Duration;
    /// let engine = Engine::builder().build().await?;
    /// assert_eq!(engine.limits().default_max_users, 300);
    /// assert_eq!(engine.limits().offline_grace, Duration::from_secs(5 * 60));
    /// engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn limits(&self) -> &Limits {
        self.core.limits()
    }

    /// Stops the engine and waits until its threads have stopped and the store is flushed and
    /// closed. Every later call, on the engine or any client, fails with 900
    /// ([`ChatError::EngineStopped`]); event streams end. Idempotent.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// use roomcast::Engine;
    /// let engine = Engine::builder().build().await?;
    /// let bob = engine.login("bob").await?;
    /// engine.shutdown().await;
    /// engine.shutdown().await; // idempotent
    /// assert_eq!(engine.login("carol").await.unwrap_err().code(), 900);
    /// let err = bob.chat_room_manager().fetch_public_chat_rooms(1, 20, None).await;
    /// assert_eq!(err.unwrap_err().code(), 900);
    /// # Ok(()) }
    /// ```
    pub async fn shutdown(&self) {
        self.core.shutdown().await;
    }

    /// True once [`Engine::shutdown`] has been called.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// use roomcast::Engine;
    /// let engine = Engine::builder().build().await?;
    /// let clone = engine.clone();
    /// assert!(!clone.is_shut_down());
    /// engine.shutdown().await;
    /// assert!(clone.is_shut_down()); // every clone is the same engine
    /// # Ok(()) }
    /// ```
    pub fn is_shut_down(&self) -> bool {
        self.core.is_stopped()
    }
}
