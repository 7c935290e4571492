//! `Engine` and its builder: opening, super admins, login, shutdown.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use roomcast_engine::{Core, CoreConfig, Location, RoomStats};
use roomcast_model::{ChatError, Limits, RoomId, UserId};

use crate::{ChatClient, ChatOptions, Clock, Durability};

/// Builds an [`Engine`]. Every setting has a default: a temporary store, Agora's limits, the
/// system clock.
#[derive(Clone)]
pub struct EngineBuilder {
    config: CoreConfig,
    options: ChatOptions,
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
    /// Keeps the store in `dir` (created if missing), so rooms survive a restart. Without this the
    /// store is temporary and deleted when the engine stops.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.store.location = Location::Dir(dir.into());
        self
    }

    /// Uses a temporary store (the default).
    pub fn temporary(mut self) -> Self {
        self.config.store.location = Location::Temporary;
        self
    }

    /// When a write counts as done. Default [`Durability::GroupCommit`]: a call that changes
    /// stored state returns `Ok` only after the change is flushed and fdatasync'ed (durable
    /// against a power cut); [`Durability::FlushOnly`] skips the fdatasync (durable against a
    /// crash of the process); [`Durability::Buffered`] acknowledges at once.
    pub fn durability(mut self, durability: Durability) -> Self {
        self.config.store.durability = durability;
        self
    }

    /// The engine's limits (room name length, max members, rooms per engine...).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.config.limits = limits;
        self
    }

    /// The default [`ChatOptions`] of every client.
    pub fn chat_options(mut self, options: ChatOptions) -> Self {
        self.options = options;
        self
    }

    /// The clock the engine reads (creation times, expiries, grace periods). Tests pass a
    /// [`crate::ManualClock`] and move it forward instead of sleeping.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.config.clock = Arc::new(clock);
        self
    }

    /// Capacity of each client's event queue and event stream (default 4,096). A consumer that
    /// falls further behind loses its oldest events and is told how many.
    pub fn event_queue_capacity(mut self, capacity: usize) -> Self {
        self.config.mailbox_capacity = capacity.max(1);
        self
    }

    /// Longest an engine call may take before it fails with 901 (default 30 s; `None`: no
    /// limit). The timer runs on the engine's own runtime, so pausing tokio's time in a caller's
    /// runtime does not fire it.
    pub fn call_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.call_timeout = timeout;
        self
    }

    /// How many room threads, fan-out shards and callback threads to run (default: one per
    /// core).
    pub fn threads(mut self, threads: usize) -> Self {
        self.config.threads = threads;
        self
    }

    /// Opens the store and starts the engine. Works from any tokio runtime (or none: the
    /// returned future needs no particular executor).
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
    pub fn builder() -> EngineBuilder {
        EngineBuilder {
            config: CoreConfig::default(),
            options: ChatOptions::default(),
        }
    }

    /// Makes `user` an app super admin, who may create rooms (Agora does this over REST).
    /// Durable when it returns `Ok`. 110 for a malformed user id.
    pub async fn add_super_admin(&self, user: impl AsRef<str>) -> Result<(), ChatError> {
        let user = UserId::new(user.as_ref())?;
        self.core.add_super_admin(user).await
    }

    /// Takes super-admin rights from `user`; `Ok(false)` if it had none. Rooms it created stay
    /// owned by it.
    pub async fn remove_super_admin(&self, user: impl AsRef<str>) -> Result<bool, ChatError> {
        let user = UserId::new(user.as_ref())?;
        self.core.remove_super_admin(&user).await
    }

    /// The super admins, sorted.
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
    pub async fn login(&self, user: impl AsRef<str>) -> Result<ChatClient, ChatError> {
        self.login_with_options(user, self.options.clone()).await
    }

    /// Like [`Engine::login`], with options for this client only.
    pub async fn login_with_options(
        &self,
        user: impl AsRef<str>,
        options: ChatOptions,
    ) -> Result<ChatClient, ChatError> {
        let user = UserId::new(user.as_ref())?;
        let session = self
            .core
            .open_client(user, options.delete_messages_on_exit)?;
        Ok(ChatClient::new(self.core.clone(), session, options))
    }

    /// A room's counters: members, online members, messages accepted and dropped by priority.
    pub async fn room_stats(&self, room_id: &RoomId) -> Result<RoomStats, ChatError> {
        self.core.room_stats(*room_id).await
    }

    /// Deliveries this engine dropped (since it started) because a client's event queue or
    /// event stream was full. Each such client was told how many it missed.
    pub fn overflowed_deliveries(&self) -> u64 {
        self.core.overflowed_deliveries()
    }

    /// Test support: makes the room's actor panic on its next call, so that a test can watch the
    /// supervisor restart it from the store. The call returns an error (903), never hangs.
    #[cfg(feature = "fault-injection")]
    #[doc(hidden)]
    pub async fn inject_room_panic(&self, room_id: &RoomId) -> Result<(), ChatError> {
        self.core.inject_room_panic(*room_id).await
    }

    /// How many user sessions the engine holds. A session lives while the user has a client or
    /// is in a room; idle ones are dropped about once a minute (engine clock).
    pub fn session_count(&self) -> usize {
        self.core.session_count()
    }

    /// How many timed checks are pending (mute expiries and offline grace periods): at most one
    /// per room, member and kind, so it follows the live mutes and offline members. For
    /// monitoring.
    pub fn pending_timers(&self) -> usize {
        self.core.pending_timers()
    }

    /// The engine's limits.
    pub fn limits(&self) -> &Limits {
        self.core.limits()
    }

    /// Stops the engine and waits until its threads have stopped and the store is flushed and
    /// closed. Every later call, on the engine or any client, fails with 900
    /// ([`ChatError::EngineStopped`]); event streams end. Idempotent.
    pub async fn shutdown(&self) {
        self.core.shutdown().await;
    }

    /// True once [`Engine::shutdown`] has been called.
    pub fn is_shut_down(&self) -> bool {
        self.core.is_stopped()
    }
}
