//! roomcast's engine: rooms as actix actors under a supervisor, delivery shards, sessions.
//!
//! **Architecture Invariant:** this is the only crate that names actix, and no actix type is
//! public. Callers use [`Core`], whose handles are `Send + Sync + Clone` and whose async methods
//! work from any tokio runtime: the engine runs its own actix System on its own threads, and its
//! own small tokio runtime for handler callbacks and call timeouts.
//!
//! The public API lives in the `roomcast` facade crate, which wraps [`Core`].

#![forbid(unsafe_code)]

mod clock;
#[cfg(feature = "cluster")]
mod cluster;
mod directory;
mod dispatch;
mod fanout;
mod handler;
mod hook;
mod idempotency;
mod mailbox;
pub mod obs;
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
mod remote;
mod room_actor;
mod session;
mod supervisor;
mod system;
mod timers;

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::{Addr, MailboxError};
use parking_lot::{Mutex, RwLock};
use roomcast_model::{
    AttributeFailures, BlockedMember, ChatCursorResult, ChatError, ChatMessage, ChatPageResult,
    ChatRoom, Command, HistoryQuery, Limits, MessageId, Moderation, MutedMember, OutgoingMessage,
    RoomId, RoomLimits, RoomMessageStats, RoomSpec, SetAttributes, Timestamp, UserId,
};
use roomcast_store::{Reader, Store, StoreConfig, StoreError, WriteSet};

pub use clock::{Clock, ManualClock, SystemClock};
pub use handler::{dispatch, dispatch_callback, ChatEventHandler, ChatRoomEventHandler};
pub use hook::{
    OnHookFailure, PreSendConfig, PreSendDecision, PreSendFuture, PreSendHook, PRE_SEND_TIMEOUT,
};
pub use roomcast_store::{Durability, Location};
use session::PresenceNotices;
pub use session::{ClientEvent, EventStream, Session, StreamCloser};

use directory::Directory;
use fanout::{Fanout, FanoutThreads};
use room_actor::{
    Answer, Apply, Broadcast, Destroy, FetchHistory, Info, Join, Leave, PresenceChanged, Query,
    RoomActor, SendMessage, Sent, Stats,
};
use supervisor::{Activate, CreateRoom, Forget, Spawn, Supervisor};
use system::ActorSystem;

/// How to start a [`Core`].
#[derive(Clone)]
pub struct CoreConfig {
    /// Where and how rooms are stored.
    pub store: StoreConfig,
    /// The engine's limits.
    pub limits: Limits,
    /// The clock the engine reads.
    pub clock: Arc<dyn Clock>,
    /// Capacity of each session's event queue (and of each event stream).
    pub mailbox_capacity: usize,
    /// Longest a call may take before it fails with 901; `None` waits forever.
    pub call_timeout: Option<Duration>,
    /// Actix arbiters (room threads), fan-out shards and callback threads; 0 = one per core.
    pub threads: usize,
    /// The embedder's check of every message before it is accepted, if any.
    pub pre_send: Option<PreSendConfig>,
    /// Cluster mode: the cluster to join (NATS servers, cluster name, node id).
    #[cfg(feature = "cluster")]
    pub cluster: Option<roomcast_cluster::ClusterConfig>,
}

impl std::fmt::Debug for CoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreConfig")
            .field("store", &self.store)
            .field("limits", &self.limits)
            .field("mailbox_capacity", &self.mailbox_capacity)
            .field("call_timeout", &self.call_timeout)
            .field("threads", &self.threads)
            .field("pre_send", &self.pre_send)
            .finish_non_exhaustive()
    }
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            store: StoreConfig::default(),
            limits: Limits::default(),
            clock: Arc::new(SystemClock),
            mailbox_capacity: 4096,
            call_timeout: Some(Duration::from_secs(30)),
            threads: 0,
            pre_send: None,
            #[cfg(feature = "cluster")]
            cluster: None,
        }
    }
}

/// What every actor shares. Holds no store: the store's clones live in the actors and in
/// [`Core`], so that shutdown can release the database.
pub(crate) struct Shared {
    pub(crate) directory: Directory,
    pub(crate) fanout: Fanout,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) limits: Limits,
    pub(crate) timers: timers::Timers,
    last_message_id: AtomicU64,
    /// Every user's session, by user: the one table of sessions (rooms look members up here).
    pub(crate) sessions: RwLock<HashSet<SessionKey>>,
    /// Calls per user per second (governor's keyed GCRA limiter), if limited.
    pub(crate) api_limiter: Option<governor::DefaultKeyedRateLimiter<UserId>>,
    /// Cluster mode: this node's part in the cluster, once joined.
    #[cfg(feature = "cluster")]
    pub(crate) node: std::sync::OnceLock<Arc<cluster::Node>>,
    /// Cluster mode: this node's slot (0 to 1023, unique among the cluster's live nodes): the
    /// low bits of every message id it makes, so that ids never repeat across nodes
    /// ([`NO_SLOT`] on one node). It changes if the node lost its slot to another.
    pub(crate) id_slot: AtomicU64,
}

/// [`Shared::id_slot`] of an engine on one node.
pub(crate) const NO_SLOT: u64 = u64::MAX;

/// [`Shared::id_slot`] of a node that lost its slot's lease (cut off from NATS for a lease
/// time): it makes no message id until it holds a slot again.
pub(crate) const SLOT_LOST: u64 = u64::MAX - 1;

impl Shared {
    /// Cluster mode: this node, once the engine joined its cluster.
    #[cfg(feature = "cluster")]
    pub(crate) fn node(&self) -> Option<&Arc<cluster::Node>> {
        self.node.get()
    }

    pub(crate) fn session_of(&self, user: &UserId) -> Option<Arc<Session>> {
        self.sessions.read().get(user).map(|k| k.0.clone())
    }

    /// A new engine-wide message id: larger than every earlier one, and growing with time
    /// (ms x 1000), so that ids stay unique across restarts.
    /// At the end of the id space (a clock past the year 584 million) there is no new id:
    /// an error, never a repeated one.
    fn next_message_id(&self) -> Result<MessageId, ChatError> {
        let id = self.next_local_id()?;
        match self.id_slot.load(Ordering::SeqCst) {
            NO_SLOT => Ok(MessageId::from_u64(id)),
            SLOT_LOST => Err(ChatError::RoomUnavailable(
                "this node is taking its place in the cluster again (retry)".into(),
            )),
            // Cluster mode: the node's slot in the low ten bits.
            slot => id
                .checked_mul(1024)
                .map(|id| MessageId::from_u64(id | slot))
                .ok_or_else(|| ChatError::General("message ids are exhausted".into())),
        }
    }

    fn next_local_id(&self) -> Result<u64, ChatError> {
        let from_clock = (self.clock.now_ms().max(0) as u64).saturating_mul(1000);
        let mut last = self.last_message_id.load(Ordering::Relaxed);
        loop {
            let next = from_clock.max(
                last.checked_add(1)
                    .ok_or_else(|| ChatError::General("message ids are exhausted".into()))?,
            );
            match self.last_message_id.compare_exchange_weak(
                last,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(next),
                Err(actual) => last = actual,
            }
        }
    }
}

/// A session in the session table, found by its user: the set holds one pointer per user
/// instead of a key and a value.
pub(crate) struct SessionKey(pub(crate) Arc<Session>);

impl PartialEq for SessionKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.user() == other.0.user()
    }
}

impl Eq for SessionKey {}

impl std::hash::Hash for SessionKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.user().hash(state);
    }
}

impl std::borrow::Borrow<UserId> for SessionKey {
    fn borrow(&self) -> &UserId {
        self.0.user()
    }
}

/// A read of a room's lists and settings (see the facade's `ChatRoomManager` for who may).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum RoomQuery {
    /// A page of the mute list (owner, admins).
    MuteList {
        /// From 1.
        page_num: u32,
        /// Items per page.
        page_size: u32,
    },
    /// A page of the allow list (owner, admins).
    AllowList {
        /// From 1.
        page_num: u32,
        /// Items per page.
        page_size: u32,
    },
    /// Whether the viewer is on the allow list (any member).
    IsOnAllowList,
    /// A page of the block list (owner, admins).
    BlockList {
        /// From 1.
        page_num: u32,
        /// Items per page.
        page_size: u32,
    },
    /// A page of the shadow-ban list (owner, admins).
    ShadowBanList {
        /// From 1.
        page_num: u32,
        /// Items per page.
        page_size: u32,
    },
    /// A page of members, newest first (members).
    Members {
        /// Where the previous page ended.
        cursor: Option<u64>,
        /// Items per page.
        page_size: u32,
    },
    /// The announcement (members).
    Announcement,
    /// Custom attributes, these keys or all (members).
    Attributes {
        /// Keys; empty for all.
        keys: Vec<String>,
    },
}

/// The answer to a [`RoomQuery`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum QueryAnswer {
    /// A page of the mute list.
    MuteList(ChatPageResult<MutedMember>),
    /// A page of users.
    Users(ChatPageResult<UserId>),
    /// A page of the block list.
    BlockList(ChatPageResult<BlockedMember>),
    /// Yes or no.
    Bool(bool),
    /// A page of members.
    Members(ChatCursorResult<UserId>),
    /// A text.
    Text(String),
    /// Attributes, key to value.
    Attributes(std::collections::BTreeMap<String, String>),
}

/// A room's message and membership counts (roomcast's own, for monitoring).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct RoomStats {
    /// The room.
    pub room_id: RoomId,
    /// Members now.
    pub member_count: usize,
    /// Members whose session is online.
    pub online_count: usize,
    /// The last message's sequence number.
    pub last_seq: u64,
    /// Messages retained for history.
    pub retained: usize,
    /// Messages accepted and dropped (by priority) since the room was loaded.
    pub messages: RoomMessageStats,
}

/// The running engine. Cloning is shallow; the engine stops on [`Core::shutdown`] or when the
/// last clone is dropped.
#[derive(Clone)]
pub struct Core {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("stopped", &self.is_stopped())
            .finish_non_exhaustive()
    }
}

struct Inner {
    shared: Arc<Shared>,
    supervisor: Addr<Supervisor>,
    system: ActorSystem,
    fanout_threads: FanoutThreads,
    store: Mutex<Option<Store>>,
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    runtime_handle: tokio::runtime::Handle,
    pool: Arc<dispatch::DispatchPool>,
    super_admins: RwLock<HashSet<UserId>>,
    mailbox_capacity: usize,
    call_timeout: Option<Duration>,
    stopped: AtomicBool,
    pre_send: Option<PreSendConfig>,
    /// Each room's sends in the order they were called, while pre-send hooks run.
    lanes: Arc<hook::Lanes>,
    /// The broadcast window: when it started (engine clock) and how many it has had.
    broadcasts: Mutex<(Timestamp, u32)>,
    /// Cluster mode: the cluster to join and the store's log, until joined.
    #[cfg(feature = "cluster")]
    cluster: Mutex<Option<(roomcast_cluster::ClusterConfig, Arc<cluster::ClusterLog>)>>,
}

pub(crate) fn storage_error(e: StoreError) -> ChatError {
    match e {
        // Cluster mode: the room's log (NATS) did not take the write: the room is unavailable
        // until it reloads from the log; nothing was acknowledged.
        StoreError::Replication(why) => {
            ChatError::RoomUnavailable(format!("the cluster's log did not take the write: {why}"))
        }
        // The outcome is unknown, as for a call that timed out: 901.
        StoreError::ReplicationUnknown(_) => ChatError::Timeout(std::time::Duration::ZERO),
        e => ChatError::Storage(roomcast_model::StorageFailure::new(e.to_string(), e)),
    }
}

pub(crate) fn mailbox_error(e: MailboxError, what: &str) -> ChatError {
    match e {
        MailboxError::Closed => ChatError::RoomUnavailable(format!("{what}: the actor stopped")),
        MailboxError::Timeout => ChatError::Timeout(std::time::Duration::ZERO),
    }
}

impl Core {
    /// Opens the store and starts the engine's threads.
    pub fn open(config: CoreConfig) -> Result<Core, ChatError> {
        #[allow(unused_mut)]
        let mut config = config;
        let threads = if config.threads == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            config.threads
        };
        // Cluster mode: every write also goes to the cluster's log; the local store is a cache
        // of the rooms this node runs, filled from the log as it takes them.
        #[cfg(feature = "cluster")]
        let cluster_log = config.cluster.as_ref().map(|_| {
            let log = Arc::new(cluster::ClusterLog::default());
            config.store.replicator = Some(Arc::new(cluster::LogHandle(log.clone())));
            log
        });
        #[cfg(feature = "cluster")]
        let clustered = cluster_log.is_some();
        #[cfg(not(feature = "cluster"))]
        let clustered = false;
        let store = Store::open(&config.store).map_err(|e| {
            ChatError::Storage(roomcast_model::StorageFailure::new(
                format!("cannot open the store: {e}"),
                e,
            ))
        })?;
        // Nobody is in a room after a restart: copies left open by a crash end where the rooms
        // ended, before anything new is sent.
        if store.close_open_copies().map_err(storage_error)? > 0 {
            store.flush_blocking().map_err(storage_error)?;
        }
        let directory = Directory::default();
        // (In cluster mode the rooms are the cluster's directory's, read once joined.)
        let local_rooms = if clustered {
            Vec::new()
        } else {
            store.rooms().map_err(storage_error)?
        };
        for record in local_rooms {
            match record {
                Ok(record) => {
                    let room = roomcast_model::Room::from_record(record, &config.limits, 0, 0);
                    directory.insert(directory::RoomEntry::new(room.snapshot(None)));
                }
                // A corrupt record makes that room unavailable, not the store: it is logged and
                // left in place for inspection; the other rooms open.
                Err(e) => tracing::error!(error = %e, "skipping a room record that cannot be read"),
            }
        }
        let super_admins: HashSet<UserId> = store
            .super_admins()
            .map_err(storage_error)?
            .into_iter()
            .collect();
        let pool = dispatch::DispatchPool::start(threads.max(2))
            .map_err(|e| ChatError::General(format!("cannot start the dispatch pool: {e}")))?;
        let (fanout, fanout_threads) =
            Fanout::start(threads, pool.clone()).map_err(|e| ChatError::General(e.to_string()))?;
        config.limits.validate()?;
        let api_limiter = config
            .limits
            .api_calls_per_user_per_second
            .and_then(std::num::NonZeroU32::new)
            .map(|per_second| {
                governor::RateLimiter::keyed(governor::Quota::per_second(per_second))
            });
        let shared = Arc::new(Shared {
            directory,
            fanout,
            clock: config.clock,
            limits: config.limits,
            timers: timers::Timers::default(),
            last_message_id: AtomicU64::new(0),
            sessions: RwLock::new(HashSet::new()),
            api_limiter,
            #[cfg(feature = "cluster")]
            node: std::sync::OnceLock::new(),
            id_slot: AtomicU64::new(NO_SLOT),
        });
        let mut runtime = tokio::runtime::Builder::new_multi_thread();
        runtime
            .worker_threads(threads.max(2))
            .thread_name("roomcast-callbacks")
            .enable_time();
        // Cluster mode: the NATS connection runs here too.
        if clustered {
            runtime.enable_io();
        }
        let runtime = runtime
            .build()
            .map_err(|e| ChatError::General(format!("cannot start the callback runtime: {e}")))?;
        runtime.spawn(timers::run(shared.clone()));
        let sup_shared = shared.clone();
        let sup_store = store.clone();
        let (system, supervisor) = ActorSystem::start(threads, move |arbiters| {
            Supervisor::new(sup_shared, sup_store, arbiters)
        })
        .map_err(|e| ChatError::General(format!("cannot start the actor system: {e}")))?;
        Ok(Core {
            inner: Arc::new(Inner {
                shared,
                supervisor,
                system,
                fanout_threads,
                store: Mutex::new(Some(store)),
                runtime_handle: runtime.handle().clone(),
                lanes: hook::Lanes::new(runtime.handle().clone()),
                pool,
                runtime: Mutex::new(Some(runtime)),
                super_admins: RwLock::new(super_admins),
                mailbox_capacity: config.mailbox_capacity,
                call_timeout: config.call_timeout,
                stopped: AtomicBool::new(false),
                pre_send: config.pre_send,
                broadcasts: Mutex::new((Timestamp::MIN, 0)),
                #[cfg(feature = "cluster")]
                cluster: Mutex::new(config.cluster.zip(cluster_log)),
            }),
        })
    }

    /// Cluster mode: joins the cluster given at open (connects to NATS, reads the cluster's
    /// super admins and rooms, starts serving other nodes). Nothing to do without one.
    #[cfg(feature = "cluster")]
    pub async fn join_cluster(&self) -> Result<(), ChatError> {
        let Some((config, log)) = self.inner.cluster.lock().take() else {
            return Ok(());
        };
        let node = cluster::Node::join(self, config, log).await?;
        let _ = self.inner.shared.node.set(node);
        Ok(())
    }

    /// Cluster mode: this node's id, once joined.
    #[cfg(feature = "cluster")]
    pub fn node_id(&self) -> Option<String> {
        self.node().map(|n| n.me().to_string())
    }

    #[cfg(feature = "cluster")]
    pub(crate) fn node(&self) -> Option<Arc<cluster::Node>> {
        self.inner.shared.node.get().cloned()
    }

    /// Cluster mode: runs `call` where its room lives. `Ok(None)`: here (go on locally).
    #[cfg(feature = "cluster")]
    async fn remote(
        &self,
        call: impl Fn() -> remote::Call,
    ) -> Result<Option<remote::Answer>, ChatError> {
        match self.node() {
            // Under the call timeout too: finding the room's owner (taking the room, a resync
            // after an outage) waits on other calls of the room, and must not wait for good.
            Some(node) => self.run(node.remote(self, call)).await,
            None => Ok(None),
        }
    }

    /// True once [`Core::shutdown`] has begun.
    pub fn is_stopped(&self) -> bool {
        self.inner.stopped.load(Ordering::SeqCst)
    }

    fn check_running(&self) -> Result<(), ChatError> {
        if self.is_stopped() {
            Err(ChatError::EngineStopped)
        } else {
            Ok(())
        }
    }

    /// Admits one call by `user`: the engine must be running and the user within its call rate
    /// (`Limits::api_calls_per_user_per_second`, code 4 beyond).
    pub fn admit(&self, user: &UserId) -> Result<(), ChatError> {
        self.check_running()?;
        // A call another node forwarded was admitted there.
        #[cfg(feature = "cluster")]
        if cluster::forwarded() {
            return Ok(());
        }
        if let Some(limiter) = &self.inner.shared.api_limiter {
            if limiter.check_key(user).is_err() {
                return Err(ChatError::ExceedServiceLimit(format!(
                    "{user} is over its {} calls per second",
                    self.limits().api_calls_per_user_per_second.unwrap_or(0)
                )));
            }
        }
        Ok(())
    }

    /// Runs `fut` in the caller's task under the call timeout. The timer is the engine's (its
    /// sleep is registered with the engine's runtime), not the caller's, so calls work from any
    /// runtime, including one with paused time or none at all.
    async fn run<T, F>(&self, fut: F) -> Result<T, ChatError>
    where
        F: Future<Output = Result<T, ChatError>>,
    {
        self.check_running()?;
        let Some(limit) = self.inner.call_timeout else {
            return fut.await;
        };
        let deadline = {
            // The engine's runtime lives as long as this handle: the sleep's timer can't go away.
            let _engine = self.inner.runtime_handle.enter();
            tokio::time::sleep(limit)
        };
        tokio::pin!(fut);
        tokio::pin!(deadline);
        std::future::poll_fn(|cx| {
            if let std::task::Poll::Ready(r) = fut.as_mut().poll(cx) {
                return std::task::Poll::Ready(r);
            }
            deadline
                .as_mut()
                .poll(cx)
                .map(|()| Err(ChatError::Timeout(limit)))
        })
        .await
    }

    /// Stops the engine: no new calls are served (they get 900), the actors and threads stop,
    /// pending writes are flushed, every event stream ends, and every handler is released (so a
    /// handler that holds a client of its own keeps nothing alive). Idempotent.
    ///
    /// It never blocks the caller's thread: the waiting is done on a thread of its own. It waits
    /// for handlers still running at most [`SHUTDOWN_HANDLER_WAIT`]: a handler that runs longer
    /// finishes on its own thread after `shutdown` returned, and no handler is called after
    /// that.
    pub async fn shutdown(&self) {
        let first = !self.inner.stopped.swap(true, Ordering::SeqCst);
        // Called from a handler: its own dispatch thread is not waited for (it waits for us).
        let caller = dispatch::current_slot();
        if first {
            tracing::info!("roomcast engine shutting down");
        }
        // Cluster mode: the node stops serving and hands its rooms over first.
        #[cfg(feature = "cluster")]
        if let Some(node) = self.node() {
            node.stop().await;
        }
        self.inner.system.stop();
        self.inner.system.wait().await;
        let inner = self.inner.clone();
        let (done, finished) = tokio::sync::oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("roomcast-shutdown".into())
            .spawn(move || {
                inner.stop_threads(SHUTDOWN_HANDLER_WAIT, caller);
                let _ = done.send(());
            });
        match spawned {
            Ok(_) => {
                let _ = finished.await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot start the shutdown thread; stopping without waiting");
                self.inner.stop_threads(Duration::ZERO, None);
            }
        }
    }

    /// The store, or 900 once stopped.
    fn store(&self) -> Result<Store, ChatError> {
        self.inner
            .store
            .lock()
            .clone()
            .ok_or(ChatError::EngineStopped)
    }

    /// Makes `user` a super admin (who may create rooms). Durable when it returns `Ok`.
    pub async fn add_super_admin(&self, user: UserId) -> Result<(), ChatError> {
        self.check_running()?;
        let mut set = WriteSet::new();
        set.put_super_admin(&user).map_err(storage_error)?;
        let commit = self.store()?.submit(set);
        self.run(async move { commit.await.map_err(storage_error) })
            .await?;
        // Shown (and effective) once durable: no read reports it before.
        self.inner.super_admins.write().insert(user);
        Ok(())
    }

    /// Removes a super admin; `Ok(false)` if `user` was not one. Rooms it owns stay its own.
    pub async fn remove_super_admin(&self, user: &UserId) -> Result<bool, ChatError> {
        self.check_running()?;
        let mut set = WriteSet::new();
        set.remove_super_admin(user);
        let commit = self.store()?.submit(set);
        self.run(async move { commit.await.map_err(storage_error) })
            .await?;
        Ok(self.inner.super_admins.write().remove(user))
    }

    /// The super admins, sorted.
    pub fn super_admins(&self) -> Vec<UserId> {
        let mut all: Vec<UserId> = self.inner.super_admins.read().iter().cloned().collect();
        all.sort();
        all
    }

    /// True if `user` is a super admin.
    pub fn is_super_admin(&self, user: &UserId) -> bool {
        self.inner.super_admins.read().contains(user)
    }

    /// Opens a client on `user`'s session: the session comes online if it was not. Pair with
    /// [`Core::close_client`] when the client is dropped.
    pub fn open_client(
        &self,
        user: UserId,
        delete_messages_on_exit: bool,
    ) -> Result<Arc<Session>, ChatError> {
        let session = self.session(user)?;
        session.set_delete_on_exit(delete_messages_on_exit);
        if let Some(notices) = session.client_opened(self.now_ms()) {
            self.presence_changed(&session, notices);
        }
        Ok(session)
    }

    /// A client of `session` was dropped: the session goes offline with its last client.
    pub fn close_client(&self, session: &Arc<Session>) {
        if let Some(notices) = session.client_closed(self.now_ms()) {
            self.presence_changed(session, notices);
        }
    }

    /// A client of `session` was opened by a login. In cluster mode, the user's sessions on
    /// other nodes (its other devices) and this one learn of each other, and this session gets
    /// the deliveries of the rooms the user is in through them (shortly after: not awaited).
    /// Nothing to do on one node, where every client of a user shares its session.
    pub async fn client_logged_in(&self, #[allow(unused_variables)] session: &Arc<Session>) {
        #[cfg(feature = "cluster")]
        if let Some(node) = self.node() {
            node.user_logged_in(self, session).await;
        }
    }

    /// Disconnects (`false`) or reconnects (`true`) a session explicitly.
    pub fn set_connected(&self, session: &Arc<Session>, connected: bool) -> Result<(), ChatError> {
        self.check_running()?;
        if let Some(notices) = session.set_connected(connected, self.now_ms()) {
            self.presence_changed(session, notices);
        }
        Ok(())
    }

    /// Tells the rooms in `notices` that the session's presence changed; each reads the
    /// presence when it handles the notice (see `session::State`). The mailbox has taken it
    /// already.
    fn presence_changed(&self, session: &Arc<Session>, notices: PresenceNotices) {
        if self.is_stopped() {
            return;
        }
        tracing::debug!(user = %session.user(), "presence changed");
        for room in notices.rooms {
            // Cluster mode: a room another node owns hears from this one.
            #[cfg(feature = "cluster")]
            if let Some(node) = self.node() {
                if !node.owns(room) {
                    node.presence_changed(room, session);
                    continue;
                }
            }
            // A room without a live actor is restarting: it reads the presence of each member
            // when it starts (`Session::entered` clears the notice).
            if let Some(addr) = self
                .inner
                .shared
                .directory
                .get(room)
                .and_then(|e| e.live_actor())
            {
                addr.do_send(PresenceChanged {
                    session: session.clone(),
                });
            }
        }
    }

    /// The engine clock's time now.
    pub fn now_ms(&self) -> Timestamp {
        self.inner.shared.clock.now_ms()
    }

    /// The session of `user`, created (offline) on first use. Every client of a user shares it.
    pub fn session(&self, user: UserId) -> Result<Arc<Session>, ChatError> {
        self.check_running()?;
        if let Some(session) = self.inner.shared.session_of(&user) {
            return Ok(session);
        }
        let mut sessions = self.inner.shared.sessions.write();
        if let Some(SessionKey(session)) = sessions.get(&user) {
            return Ok(session.clone());
        }
        let session = Session::new(user, self.inner.mailbox_capacity, self.inner.pool.clone());
        sessions.insert(SessionKey(session.clone()));
        Ok(session)
    }

    /// Deliveries this engine dropped because a consumer's queue (a handler's or a stream's)
    /// was full.
    pub fn overflowed_deliveries(&self) -> u64 {
        self.inner.pool.overflowed()
    }

    /// How many timed checks (mute expiries, offline grace periods) are pending: at most one per
    /// room, member and kind.
    pub fn pending_timers(&self) -> usize {
        self.inner.shared.timers.len()
    }

    /// How many rooms are in memory (have a running actor); the others are in the store only,
    /// loaded on their next use (after a restart, or after hibernating).
    pub fn rooms_in_memory(&self) -> usize {
        self.inner.shared.directory.live_count()
    }

    /// The engine's limits.
    pub fn limits(&self) -> &Limits {
        &self.inner.shared.limits
    }

    /// How many sessions the engine holds: users with a client, in a room, or not yet swept
    /// (idle sessions are dropped about once a minute of engine-clock time).
    pub fn session_count(&self) -> usize {
        self.inner.shared.sessions.read().len()
    }

    /// Creates a room owned by `owner` (who must be a super admin), with `members` in it.
    pub async fn create_room(
        &self,
        owner: &Session,
        spec: RoomSpec,
        room_limits: RoomLimits,
        members: Vec<UserId>,
    ) -> Result<ChatRoom, ChatError> {
        self.admit(owner.user())?;
        // Cluster mode: super admins made or removed on another node are read first.
        #[cfg(feature = "cluster")]
        if let Some(node) = self.node() {
            node.catch_up_engine(self).await?;
        }
        if !self.is_super_admin(owner.user()) {
            return Err(ChatError::PermissionDenied(
                "only a super admin may create a chat room".into(),
            ));
        }
        spec.validate(self.limits())?;
        room_limits.validate(self.limits())?;
        let max_initial = self.limits().max_initial_members;
        if members.len() > max_initial {
            return Err(ChatError::InvalidParam(format!(
                "at most {max_initial} members may be added at creation, got {}",
                members.len()
            )));
        }
        let mut sessions: Vec<Arc<Session>> = Vec::with_capacity(members.len() + 1);
        for user in std::iter::once(owner.user().clone()).chain(members) {
            if !sessions.iter().any(|s| *s.user() == user) {
                sessions.push(self.session(user)?);
            }
        }
        // Everyone the new room will hold counts it against rooms-per-user from now until the
        // room has started with them in it (or failed to be created).
        let max = self.limits().max_rooms_per_user;
        let reservations = sessions
            .iter()
            .map(|s| s.reserve_room(None, max))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flatten()
            .collect();
        // Cluster mode: the id is claimed in the cluster first (the room's lease).
        #[allow(unused_mut)]
        let mut id = None;
        #[cfg(feature = "cluster")]
        if let Some(node) = self.node() {
            for _ in 0..16 {
                let next = self
                    .inner
                    .supervisor
                    .send(supervisor::NextId)
                    .await
                    .map_err(|e| self.delivery_error(e, None))??;
                if node.claim(next).await? {
                    id = Some(next);
                    break;
                }
            }
            if id.is_none() {
                return Err(ChatError::RoomUnavailable(
                    "no free room id could be claimed in the cluster".into(),
                ));
            }
        }
        let msg = CreateRoom {
            id,
            owner: owner.user().clone(),
            spec,
            room_limits,
            members: sessions,
            reservations,
        };
        let supervisor = self.inner.supervisor.clone();
        self.run(async move {
            let created = supervisor
                .send(msg)
                .await
                .map_err(|e| self.delivery_error(e, None))
                .and_then(|r| r);
            // Cluster mode: an id claimed for a room that was not created is given back.
            #[cfg(feature = "cluster")]
            if let (Err(_), Some(id), Some(node)) = (&created, id, self.node()) {
                node.destroyed(id);
            }
            let (room, commit) = created?;
            commit.await.map_err(storage_error)?;
            #[cfg(feature = "cluster")]
            if let Some(node) = self.node() {
                node.put_summary(&room).await;
            }
            Ok(room)
        })
        .await
    }

    /// Destroys `room`, if `user` is its owner.
    pub async fn destroy_room(&self, user: &UserId, room: RoomId) -> Result<(), ChatError> {
        self.admit(user)?;
        #[cfg(feature = "cluster")]
        if let Some(a) = self
            .remote(|| remote::Call::Destroy {
                room,
                user: user.clone(),
            })
            .await?
        {
            return a.unit();
        }
        let msg = Destroy { user: user.clone() };
        self.room_call(room, msg).await?;
        self.inner.supervisor.do_send(Forget(room));
        #[cfg(feature = "cluster")]
        if let Some(node) = self.node() {
            node.destroyed(room);
        }
        Ok(())
    }

    /// `session`'s user joins `room`; returns the room as it sees it. The room's newest
    /// messages are replayed to it.
    pub async fn join_room(
        &self,
        session: &Arc<Session>,
        room: RoomId,
    ) -> Result<ChatRoom, ChatError> {
        self.admit(session.user())?;
        let joined = self.join_or_attach(session, room, false).await;
        // Cluster mode: the user's sessions on other nodes (its other devices) hear of it.
        #[cfg(feature = "cluster")]
        if joined.is_ok() {
            if let Some(node) = self.node() {
                node.user_joined(session.user(), room);
            }
        }
        joined
    }

    /// Cluster mode: `session` gets `room`'s deliveries too, if its user is a member already
    /// (through a session on another node). `NotJoined` if the user is not a member;
    /// `AlreadyJoined` once attached (or if it was).
    #[cfg(feature = "cluster")]
    pub(crate) async fn attach_room(
        &self,
        session: &Arc<Session>,
        room: RoomId,
    ) -> Result<ChatRoom, ChatError> {
        self.join_or_attach(session, room, true).await
    }

    async fn join_or_attach(
        &self,
        session: &Arc<Session>,
        room: RoomId,
        attach: bool,
    ) -> Result<ChatRoom, ChatError> {
        // The place is held until the room has answered, so concurrent joins cannot pass the
        // limit together.
        #[allow(unused_mut)]
        let mut reservation = session.reserve_room(Some(room), self.limits().max_rooms_per_user)?;
        #[cfg(feature = "cluster")]
        if let Some(node) = self.node() {
            if let cluster::Route::Remote(_) = node.route(self, room).await? {
                let mirror = node.before_remote_join(self, room).await?;
                let keeps_copy = !session.deletes_messages_on_exit();
                let offline_since = session.offline_since();
                let user = session.user().clone();
                let answer = node
                    .remote(self, || remote::Call::Join {
                        room,
                        user: user.clone(),
                        node: node.me().to_string(),
                        keeps_copy,
                        offline_since,
                        attach,
                    })
                    .await;
                match answer {
                    Ok(Some(remote::Answer::Joined {
                        room: info,
                        copy_from,
                        mark,
                    })) => {
                        let now = session.entered(room, copy_from, reservation.as_mut());
                        session.confirm_room_mark(room, mark);
                        node.after_remote_join(self, &mirror, session, true);
                        if now != offline_since {
                            // Its presence changed during the call: the owner hears it now.
                            node.presence_changed(room, session);
                        }
                        return Ok(info);
                    }
                    Ok(Some(other)) => {
                        node.after_remote_join(self, &mirror, session, false);
                        return Err(ChatError::General(format!(
                            "a node answered a join with {other:?}"
                        )));
                    }
                    // The room came here meanwhile: joined locally below.
                    Ok(None) => node.after_remote_join(self, &mirror, session, false),
                    // The user is in the room through a session on another node: this one
                    // gets the room's deliveries too.
                    Err(ChatError::AlreadyJoined) => {
                        let now = session.entered(room, u64::MAX, reservation.as_mut());
                        node.after_remote_join(self, &mirror, session, true);
                        if now != offline_since {
                            node.presence_changed(room, session);
                        }
                        return Err(ChatError::AlreadyJoined);
                    }
                    Err(e) => {
                        node.after_remote_join(self, &mirror, session, false);
                        return Err(e);
                    }
                }
            }
        }
        #[allow(unused_mut)]
        let mut seen_through = None;
        #[cfg(feature = "cluster")]
        if let Some(node) = self.node() {
            seen_through = node.take_unanswered_join(room, session.user());
        }
        let msg = Join {
            session: session.clone(),
            reservation,
            attach,
            seen_through,
        };
        self.room_call(room, msg).await
    }

    /// `from` sends `message`; returns it as the room accepted it (id, sequence, time), or, for
    /// a repeat of its idempotency key within the window, as the room accepted the first.
    ///
    /// With a pre-send hook, the send takes its place in the room's lane when called, runs the
    /// hook (in this task, under the hook's timeout), and hands the message to the room only
    /// once every earlier send to the room has: the room accepts messages in the order their
    /// sends were called, however long each hook took.
    pub async fn send_message(
        &self,
        from: &UserId,
        message: OutgoingMessage,
    ) -> Result<ChatMessage, ChatError> {
        self.admit(from)?;
        message.validate(self.limits().message_max_bytes)?;
        // Cluster mode: a message must fit a NATS message with its envelope.
        #[cfg(feature = "cluster")]
        if let Some(node) = self.node() {
            node.check_message_size(&message)?;
        }
        // Cluster mode: a room another node owns gets the message there (its pre-send hook,
        // its order).
        #[cfg(feature = "cluster")]
        if let Some(a) = self
            .remote(|| remote::Call::Send {
                from: from.clone(),
                message: message.clone(),
            })
            .await?
        {
            return a.message();
        }
        let except = self.inner.shared.session_of(from).map(|s| s.mailbox().id());
        let room = message.room_id;
        // A send from inside a hook skips the hook and the lane (it would wait for the message
        // its hook is deciding about).
        let pre_send = self.inner.pre_send.as_ref().filter(|_| !hook::in_hook());
        let mut turn = pre_send.map(|_| self.inner.lanes.take(room));
        let span = tracing::debug_span!("roomcast.call", room = %room, op = "SendMessage");
        let call = async move {
            let message = match pre_send {
                Some(pre_send) => self.vet(pre_send, from, message).await?,
                None => message,
            };
            let retry = message.idempotency_key.is_some().then(|| message.clone());
            if let Some(turn) = turn.as_mut() {
                turn.wait().await;
            }
            // Ids follow the room's order: taken once this send's turn came.
            let msg = SendMessage {
                except,
                from: from.clone(),
                msg_id: self.inner.shared.next_message_id()?,
                message,
            };
            let (addr, _held) = self.room_actor(room).await?;
            // Queued in the actor's mailbox as `send` is called: the next send may go.
            let reply = addr.send(msg);
            drop(turn);
            let Answer { value, durable } = reply
                .await
                .map_err(|e| self.delivery_error(e, Some(room)))??;
            let started = std::time::Instant::now();
            durable.await.map_err(storage_error)?;
            obs::flushed(started.elapsed().as_secs_f64());
            match value {
                // Its sender sees its message unmarked, shadowed or not.
                Sent::Message(message) => Ok(message.unmarked()),
                Sent::Stored { record, read } => {
                    let stored = read.await.and_then(|r| r).map_err(storage_error)?;
                    Ok(match stored {
                        Some(data) => ChatMessage::new(data).unmarked(),
                        // The room's retention dropped the first already: its id, sequence
                        // number and time, with the retry's content.
                        None => {
                            let retry = retry.ok_or_else(|| {
                                ChatError::General("a repeat without a key".into())
                            })?;
                            ChatMessage::new(roomcast_model::MessageData {
                                recalled: None,
                                shadowed: false,
                                held_until: None,
                                msg_id: record.msg_id,
                                room_id: room,
                                from: record.from,
                                seq: record.seq,
                                server_time: record.at,
                                body: retry.body,
                                attributes: retry.attributes,
                                priority: retry.priority,
                            })
                        }
                    })
                }
            }
        };
        self.run(tracing::Instrument::instrument(call, span)).await
    }

    /// Runs the pre-send hook on `message`: the message to send (as it is, or rewritten), or
    /// 508. A hook that panics or does not answer within the timeout is handled by the policy.
    async fn vet(
        &self,
        pre_send: &PreSendConfig,
        from: &UserId,
        message: OutgoingMessage,
    ) -> Result<OutgoingMessage, ChatError> {
        use std::task::Poll;
        let deadline = {
            let _engine = self.inner.runtime_handle.enter();
            tokio::time::sleep(pre_send.timeout)
        };
        let outcome = 'decided: {
            // A hook that panics while making its future is a hook that panicked.
            let made = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                pre_send.hook.pre_send(from, &message)
            }));
            let Ok(decision) = made else {
                break 'decided Err("panicked");
            };
            let decision = hook::as_hook(decision);
            tokio::pin!(decision);
            tokio::pin!(deadline);
            std::future::poll_fn(|cx| {
                let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    decision.as_mut().poll(cx)
                }));
                match polled {
                    Ok(Poll::Ready(decision)) => return Poll::Ready(Ok(decision)),
                    Err(_) => return Poll::Ready(Err("panicked")),
                    Ok(Poll::Pending) => {}
                }
                deadline
                    .as_mut()
                    .poll(cx)
                    .map(|()| Err("did not answer in time"))
            })
            .await
        };
        match outcome {
            Ok(PreSendDecision::Allow) => Ok(message),
            Ok(PreSendDecision::Reject(reason)) => {
                Err(ChatError::MessageExternalLogicBlocked(reason))
            }
            Ok(PreSendDecision::Rewrite(mut rewritten)) => {
                rewritten.room_id = message.room_id;
                rewritten.idempotency_key = message.idempotency_key;
                rewritten.validate(self.limits().message_max_bytes)?;
                Ok(rewritten)
            }
            Err(why) => {
                tracing::warn!(user = %from, room = %message.room_id, "the pre-send hook {why}");
                match pre_send.on_failure {
                    OnHookFailure::Reject => Err(ChatError::MessageExternalLogicBlocked(format!(
                        "the pre-send hook {why}"
                    ))),
                    _ => Ok(message),
                }
            }
        }
    }

    /// `from`, a super admin, sends `message` to every active room: every room in memory (not
    /// hibernating) with at least one member. Returns how many rooms accepted it. Counts
    /// against `Limits::broadcasts_per_window` (4 beyond); 703 for anyone else.
    pub async fn broadcast(
        &self,
        from: &UserId,
        mut message: OutgoingMessage,
    ) -> Result<usize, ChatError> {
        self.admit(from)?;
        if !self.is_super_admin(from) {
            return Err(ChatError::PermissionDenied(
                "only a super admin may broadcast to every chat room".into(),
            ));
        }
        message.idempotency_key = None;
        message.validate(self.limits().message_max_bytes)?;
        if let Some((max, window)) = self.limits().broadcasts_per_window {
            let now = self.now_ms();
            let window_ms = roomcast_model::ms_to_timestamp(roomcast_model::duration_ms(window));
            let mut counted = self.inner.broadcasts.lock();
            if now.saturating_sub(counted.0) >= window_ms {
                *counted = (now, 0);
            }
            if counted.1 >= max {
                return Err(ChatError::ExceedServiceLimit(format!(
                    "at most {max} broadcasts per {window:?}"
                )));
            }
            counted.1 += 1;
        }
        let except = self.inner.shared.session_of(from).map(|s| s.mailbox().id());
        #[allow(unused_mut)]
        let mut rooms = self.inner.shared.directory.active_rooms();
        // Cluster mode: every room of the cluster with members, each sent where it runs.
        #[cfg(feature = "cluster")]
        if let Some(node) = self.node() {
            let mut calls = Vec::new();
            for room in self.inner.shared.directory.rooms_with_members() {
                let mut message = message.clone();
                message.room_id = room;
                let core = self.clone();
                let node = node.clone();
                let from = from.clone();
                calls.push(self.inner.runtime_handle.spawn(async move {
                    let call = || remote::Call::Broadcast {
                        room,
                        from: from.clone(),
                        message: message.clone(),
                    };
                    match node.remote(&core, call).await {
                        Ok(Some(answer)) => answer.unit(),
                        Ok(None) => core.serve_call(call()).await.and_then(remote::Answer::unit),
                        Err(e) => Err(e),
                    }
                }));
            }
            let mut reached = 0;
            for call in calls {
                match call.await {
                    Ok(Ok(())) => reached += 1,
                    Ok(Err(e)) => tracing::debug!(error = %e, "a room missed a broadcast"),
                    Err(e) => tracing::warn!(error = %e, "a broadcast call failed"),
                }
            }
            self.check_running()?;
            return Ok(reached);
        }
        let mut calls = Vec::with_capacity(rooms.len());
        for room in rooms {
            let mut message = message.clone();
            message.room_id = room;
            let msg = Broadcast {
                except,
                from: from.clone(),
                message,
                msg_id: self.inner.shared.next_message_id()?,
            };
            let core = self.clone();
            calls.push(
                self.inner
                    .runtime_handle
                    .spawn(async move { core.room_call(room, msg).await }),
            );
        }
        let mut reached = 0;
        for call in calls {
            match call.await {
                Ok(Ok(_)) => reached += 1,
                // A room destroyed or restarting meanwhile does not count.
                Ok(Err(e)) => tracing::debug!(error = %e, "a room missed a broadcast"),
                Err(e) => tracing::warn!(error = %e, "a broadcast call failed"),
            }
        }
        self.check_running()?;
        Ok(reached)
    }

    /// A page of `room`'s retained messages, for a member.
    pub async fn fetch_history(
        &self,
        viewer: &UserId,
        room: RoomId,
        query: HistoryQuery,
    ) -> Result<ChatCursorResult<ChatMessage>, ChatError> {
        self.admit(viewer)?;
        let max = self.limits().history_page_max;
        if query.page_size == 0 || query.page_size > max {
            return Err(ChatError::InvalidParam(format!(
                "page size must be 1 to {max}, got {}",
                query.page_size
            )));
        }
        // Cluster mode: a page too big for one NATS message comes in parts, each asked for
        // from the cursor of the one before.
        #[allow(unused_mut)]
        let mut query = query;
        // What came from another node before the room came here (cluster mode).
        #[allow(unused_mut)]
        let mut data: Vec<ChatMessage> = Vec::new();
        #[cfg(feature = "cluster")]
        {
            while let Some(a) = self
                .remote(|| remote::Call::History {
                    room,
                    viewer: viewer.clone(),
                    query,
                })
                .await?
            {
                let (mut page, partial) = match a {
                    remote::Answer::HistoryPart(page) => (page, true),
                    other => (other.history()?, false),
                };
                let got = page.data.len() as u32;
                data.append(&mut page.data);
                match page.cursor {
                    Some(cursor) if partial && got > 0 && got < query.page_size => {
                        query.start_seq = Some(cursor);
                        query.page_size -= got;
                    }
                    cursor => return Ok(ChatCursorResult { data, cursor }),
                }
            }
        }
        let msg = FetchHistory {
            viewer: viewer.clone(),
            query,
        };
        let page = self.room_call(room, msg).await?;
        let mut page = self
            .run(async move { page.await.and_then(|p| p).map_err(storage_error) })
            .await?;
        if !data.is_empty() {
            // The room came here between two parts: the rest was read here.
            data.append(&mut page.data);
            page.data = data;
        }
        Ok(page)
    }

    /// `by` moderates `room` (roles, lists, mutes, specification, announcement), giving
    /// `reason` (at most 512 characters) for its events and the audit log.
    pub async fn moderate(
        &self,
        by: &UserId,
        room: RoomId,
        action: Moderation,
        reason: Option<String>,
    ) -> Result<(), ChatError> {
        self.admit(by)?;
        let reason = roomcast_model::check_reason(reason)?;
        let command = Command::Moderate {
            by: by.clone(),
            action,
            now: self.now_ms(),
            reason,
        };
        #[cfg(feature = "cluster")]
        if let Some(a) = self
            .remote(|| remote::Call::Apply {
                room,
                command: command.clone(),
            })
            .await?
        {
            return a.failures().map(drop);
        }
        self.room_call(room, Apply(command)).await.map(drop)
    }

    /// Message `seq` of `room` as the store holds it (a member, or the owner or an admin), or
    /// 500 if the room does not retain it.
    async fn read_message(
        &self,
        viewer: &UserId,
        room: RoomId,
        seq: u64,
    ) -> Result<roomcast_model::MessageRef, ChatError> {
        let msg = room_actor::ReadMessage {
            viewer: viewer.clone(),
            seq,
        };
        let read = self.room_call(room, msg).await?;
        let found = self
            .run(async move { read.await.and_then(|r| r).map_err(storage_error) })
            .await?;
        found
            .as_ref()
            .map(roomcast_model::MessageRef::of)
            .ok_or_else(|| {
                ChatError::MessageInvalid(format!("room {room} retains no message {seq}"))
            })
    }

    /// `by` recalls message `seq` of `room`: its own within the recall window, or any as the
    /// owner or an admin (a moderation act, giving `reason`). `as_moderator`: only as the owner
    /// or an admin (703 for a member, even on its own message).
    pub async fn recall_message(
        &self,
        by: &UserId,
        room: RoomId,
        seq: u64,
        reason: Option<String>,
        as_moderator: bool,
    ) -> Result<(), ChatError> {
        self.admit(by)?;
        let reason = roomcast_model::check_reason(reason)?;
        #[cfg(feature = "cluster")]
        if let Some(a) = self
            .remote(|| remote::Call::Recall {
                room,
                by: by.clone(),
                seq,
                reason: reason.clone(),
                as_moderator,
            })
            .await?
        {
            return a.unit();
        }
        let message = self.read_message(by, room, seq).await?;
        let now = self.now_ms();
        let command = if as_moderator {
            Command::Moderate {
                by: by.clone(),
                action: Moderation::DeleteMessage(message),
                now,
                reason,
            }
        } else {
            Command::RecallMessage {
                by: by.clone(),
                message,
                now,
                reason,
            }
        };
        self.room_call(room, Apply(command)).await.map(drop)
    }

    /// `by` pins message `seq` of `room` (owner and admins), giving `reason`.
    pub async fn pin_message(
        &self,
        by: &UserId,
        room: RoomId,
        seq: u64,
        reason: Option<String>,
    ) -> Result<(), ChatError> {
        self.admit(by)?;
        let reason = roomcast_model::check_reason(reason)?;
        #[cfg(feature = "cluster")]
        if let Some(a) = self
            .remote(|| remote::Call::Pin {
                room,
                by: by.clone(),
                seq,
                reason: reason.clone(),
            })
            .await?
        {
            return a.unit();
        }
        let message = self.read_message(by, room, seq).await?;
        let command = Command::Moderate {
            by: by.clone(),
            action: Moderation::PinMessage(message),
            now: self.now_ms(),
            reason,
        };
        self.room_call(room, Apply(command)).await.map(drop)
    }

    /// A page of `room`'s audit log, newest first, older than entry `before` if given (owner
    /// and admins; 1 to `LIST_PAGE_MAX` entries).
    pub async fn fetch_audit_log(
        &self,
        viewer: &UserId,
        room: RoomId,
        before: Option<u64>,
        page_size: u32,
    ) -> Result<ChatCursorResult<roomcast_model::AuditEntry>, ChatError> {
        self.admit(viewer)?;
        roomcast_model::check_page_size(page_size, roomcast_model::LIST_PAGE_MAX)?;
        #[cfg(feature = "cluster")]
        if let Some(a) = self
            .remote(|| remote::Call::AuditLog {
                room,
                viewer: viewer.clone(),
                before,
                page_size,
            })
            .await?
        {
            return a.audit();
        }
        let msg = room_actor::FetchAuditLog {
            viewer: viewer.clone(),
            before,
            page_size,
        };
        let page = self.room_call(room, msg).await?;
        self.run(async move { page.await.and_then(|p| p).map_err(storage_error) })
            .await
    }

    /// `by` sets attributes of `room`; returns the keys that failed and why.
    pub async fn set_attributes(
        &self,
        by: &UserId,
        room: RoomId,
        set: SetAttributes,
    ) -> Result<AttributeFailures, ChatError> {
        self.admit(by)?;
        let command = Command::SetAttributes {
            by: by.clone(),
            set,
        };
        #[cfg(feature = "cluster")]
        if let Some(a) = self
            .remote(|| remote::Call::Apply {
                room,
                command: command.clone(),
            })
            .await?
        {
            return a.failures();
        }
        self.room_call(room, Apply(command)).await
    }

    /// `by` removes attributes of `room`; returns the keys that failed and why.
    pub async fn remove_attributes(
        &self,
        by: &UserId,
        room: RoomId,
        keys: Vec<String>,
        force: bool,
    ) -> Result<AttributeFailures, ChatError> {
        self.admit(by)?;
        let command = Command::RemoveAttributes {
            by: by.clone(),
            keys,
            force,
        };
        #[cfg(feature = "cluster")]
        if let Some(a) = self
            .remote(|| remote::Call::Apply {
                room,
                command: command.clone(),
            })
            .await?
        {
            return a.failures();
        }
        self.room_call(room, Apply(command)).await
    }

    /// Reads `room`'s lists or settings as `viewer`.
    pub async fn query(
        &self,
        viewer: &UserId,
        room: RoomId,
        query: RoomQuery,
    ) -> Result<QueryAnswer, ChatError> {
        self.admit(viewer)?;
        #[cfg(feature = "cluster")]
        if let Some(a) = self
            .remote(|| remote::Call::Query {
                room,
                viewer: viewer.clone(),
                query: query.clone(),
            })
            .await?
        {
            return a.query();
        }
        let msg = Query {
            viewer: viewer.clone(),
            query,
        };
        self.room_call(room, msg).await
    }

    /// Up to `count` messages of `user`'s local copy of `room`'s conversation (the messages of
    /// the spans it was a member for, while the room retains them), newest first, older than
    /// `before` if given.
    pub async fn load_local_messages(
        &self,
        user: &UserId,
        room: RoomId,
        before: Option<u64>,
        count: usize,
    ) -> Result<Vec<ChatMessage>, ChatError> {
        self.admit(user)?;
        #[cfg(feature = "cluster")]
        {
            let current = self
                .inner
                .shared
                .session_of(user)
                .and_then(|s| s.copy_start(room));
            if let Some(a) = self
                .remote(|| remote::Call::LocalMessages {
                    room,
                    user: user.clone(),
                    before,
                    count,
                    current,
                })
                .await?
            {
                return a.messages();
            }
        }
        let store = self.store()?;
        let user = user.clone();
        // The copy's spans: the stored ones (kept copies), and the current membership's, which
        // lives in the session while the copy would be deleted on exit.
        let current = self
            .inner
            .shared
            .session_of(&user)
            .and_then(|s| s.copy_start(room));
        // Read on the store's thread, after every write submitted before it; reported once
        // what it read is durable. A message still held for review is hidden as of now.
        let now = self.inner.shared.clock.now_ms();
        let read = store
            .read(move |reader| local_messages(reader, &user, room, current, before, count, now));
        let settled = store.commit();
        self.run(async move {
            let messages = read.await.and_then(|r| r).map_err(storage_error)?;
            settled.await.map_err(storage_error)?;
            Ok(messages)
        })
        .await
    }

    /// Test support: makes `room`'s actor panic while handling its next call, to exercise the
    /// supervisor's recovery.
    #[cfg(feature = "fault-injection")]
    #[doc(hidden)]
    pub async fn inject_room_panic(&self, room: RoomId) -> Result<(), ChatError> {
        self.room_call(room, room_actor::Panic).await
    }

    /// `room`'s counters.
    pub async fn room_stats(&self, room: RoomId) -> Result<RoomStats, ChatError> {
        self.check_running()?;
        #[cfg(feature = "cluster")]
        if let Some(a) = self.remote(|| remote::Call::Stats { room }).await? {
            return a.stats();
        }
        // A sleeping room is answered from its entry and the store, without waking it: a
        // monitoring loop over every room must not keep them all in memory.
        let asleep = self
            .inner
            .shared
            .directory
            .get(room)
            .filter(|e| !e.is_destroyed())
            .and_then(|e| e.sleeping());
        if let Some(members) = asleep {
            let shared = &self.inner.shared;
            let online_count = members
                .iter()
                .filter(|u| shared.session_of(u).is_some_and(|s| s.is_online()))
                .count();
            let member_count = members.len();
            let read = self.store()?.read(move |reader| {
                let bounds = reader.message_bounds(room)?;
                Ok(RoomStats {
                    room_id: room,
                    member_count,
                    online_count,
                    last_seq: reader.last_seq(room)?,
                    retained: bounds.map_or(0, |(first, last)| (last + 1 - first) as usize),
                    messages: RoomMessageStats::default(),
                })
            });
            return self
                .run(async move { read.await.and_then(|r| r).map_err(storage_error) })
                .await;
        }
        let read = self.room_call(room, Stats).await?;
        self.run(async move { read.await.and_then(|r| r).map_err(storage_error) })
            .await
    }

    /// `user` leaves `room`.
    pub async fn leave_room(
        &self,
        user: &UserId,
        room: RoomId,
        owner_may_leave: bool,
    ) -> Result<(), ChatError> {
        self.admit(user)?;
        #[cfg(feature = "cluster")]
        if let Some(a) = self
            .remote(|| remote::Call::Leave {
                room,
                user: user.clone(),
                owner_may_leave,
            })
            .await?
        {
            a.unit()?;
            if let Some(node) = self.node() {
                node.after_remote_leave(self, room, user);
            }
            return Ok(());
        }
        let msg = Leave {
            user: user.clone(),
            owner_may_leave,
        };
        self.room_call(room, msg).await
    }

    /// `room` as `viewer` sees it (any user may look).
    pub async fn room_info(&self, viewer: &UserId, room: RoomId) -> Result<ChatRoom, ChatError> {
        self.admit(viewer)?;
        #[cfg(feature = "cluster")]
        if let Some(a) = self
            .remote(|| remote::Call::Info {
                room,
                viewer: viewer.clone(),
            })
            .await?
        {
            return a.room();
        }
        let msg = Info {
            viewer: viewer.clone(),
        };
        self.room_call(room, msg).await
    }

    /// Page `page_num` (from 1) of the public room list, newest first, optionally only rooms
    /// whose name contains `name_filter` (case-insensitive).
    pub async fn public_rooms(
        &self,
        viewer: &UserId,
        page_num: u32,
        page_size: u32,
        name_filter: Option<&str>,
    ) -> Result<ChatPageResult<ChatRoom>, ChatError> {
        self.admit(viewer)?;
        let max = self.limits().public_room_page_max;
        if page_num == 0 {
            return Err(ChatError::InvalidParam("page numbers start at 1".into()));
        }
        if page_size == 0 || page_size > max {
            return Err(ChatError::InvalidParam(format!(
                "page size must be 1 to {max}, got {page_size}"
            )));
        }
        let (data, total) = self
            .inner
            .shared
            .directory
            .page(page_num, page_size, name_filter);
        // The page may show a room whose creation is not flushed yet: report it once it is.
        self.settled().await?;
        Ok(ChatPageResult {
            data,
            page_num,
            page_size,
            total,
        })
    }

    /// Waits until every write made so far is durable (at once if nothing waits to be flushed).
    async fn settled(&self) -> Result<(), ChatError> {
        let commit = match self.inner.store.lock().as_ref() {
            Some(store) => store.commit(),
            None => return Err(ChatError::EngineStopped),
        };
        commit.await.map_err(storage_error)
    }

    fn delivery_error(&self, e: MailboxError, room: Option<RoomId>) -> ChatError {
        if self.is_stopped() {
            return ChatError::EngineStopped;
        }
        if let Some(room) = room {
            let gone = self
                .inner
                .shared
                .directory
                .get(room)
                .is_none_or(|entry| entry.is_destroyed());
            if gone {
                return ChatError::RoomNotExist(room.to_string());
            }
        }
        mailbox_error(e, "room call")
    }

    /// The live actor of `room`, started from the store if it is not running: the room is read
    /// on the store's thread, and the supervisor starts it (or answers the actor another caller
    /// started meanwhile).
    ///
    /// The address comes with a hold on the room ([`directory::CallGuard`]): the room does not
    /// hibernate while the call holds it, so the message it sends is handled.
    async fn room_actor(
        &self,
        room: RoomId,
    ) -> Result<(Addr<RoomActor>, directory::CallGuard), ChatError> {
        let entry = self
            .inner
            .shared
            .directory
            .get(room)
            .filter(|e| !e.is_destroyed())
            .ok_or_else(|| ChatError::RoomNotExist(room.to_string()))?;
        let clock = &self.inner.shared.clock;
        // A room that hibernates between its start and our hold is started again; it cannot
        // go on for long (a started room waits out its idle time before it may go).
        // (A test's clock that leaps by an idle time between every step can send a started room
        // back to sleep each time; a real clock cannot.)
        for _ in 0..64 {
            if let Some(held) = entry.enter(clock.now_ms()) {
                return Ok(held);
            }
            // Cluster mode: only the lease holder starts the room (a call routed here just
            // before the lease went would start an actor that stops at once, again and again).
            #[cfg(feature = "cluster")]
            if let Some(node) = self.node() {
                if !node.owns(room) {
                    return Err(ChatError::RoomUnavailable(format!(
                        "room {room} moved to another node (retry)"
                    )));
                }
            }
            let supervisor = &self.inner.supervisor;
            let running = supervisor
                .send(Activate(room))
                .await
                .map_err(|e| self.delivery_error(e, Some(room)))??;
            if let Err(starts) = running {
                let replay = self.limits().join_replay_count;
                let data = self
                    .store()?
                    .read(move |reader| supervisor::load_room(reader, room, replay))
                    .await
                    .and_then(|r| r)
                    .map_err(storage_error)?
                    .ok_or_else(|| ChatError::RoomNotExist(room.to_string()))?;
                supervisor
                    .send(Spawn {
                        id: room,
                        data,
                        starts,
                    })
                    .await
                    .map_err(|e| self.delivery_error(e, Some(room)))??;
            }
            if entry.is_destroyed() {
                return Err(ChatError::RoomNotExist(room.to_string()));
            }
        }
        Err(ChatError::RoomUnavailable(format!(
            "room {room} kept stopping while being started"
        )))
    }

    /// Sends `msg` to `room`'s actor (starting it if needed) and waits until what the answer
    /// reports is durable before returning its value, all under the call timeout.
    async fn room_call<M, T>(&self, room: RoomId, msg: M) -> Result<T, ChatError>
    where
        M: actix::Message<Result = Result<Answer<T>, ChatError>> + Send + 'static,
        M::Result: Send,
        RoomActor: actix::Handler<M>,
        T: Send + 'static,
    {
        self.check_running()?;
        let span =
            tracing::debug_span!("roomcast.call", room = %room, op = std::any::type_name::<M>());
        let call = async move {
            let (addr, _held) = self.room_actor(room).await?;
            let Answer { value, durable } = addr
                .send(msg)
                .await
                .map_err(|e| self.delivery_error(e, Some(room)))??;
            let started = std::time::Instant::now();
            durable.await.map_err(storage_error)?;
            obs::flushed(started.elapsed().as_secs_f64());
            Ok(value)
        };
        self.run(tracing::Instrument::instrument(call, span)).await
    }
}

/// `user`'s local copy of `room`: up to `count` messages, newest first, older than `before`.
/// `current` is where the present membership's span starts, for a copy deleted on exit (held in
/// the session, not stored). Runs on the store's thread.
fn local_messages(
    reader: &Reader,
    user: &UserId,
    room: RoomId,
    current: Option<u64>,
    before: Option<u64>,
    count: usize,
    now: Timestamp,
) -> Result<Vec<ChatMessage>, StoreError> {
    use std::ops::Bound::Included;
    let mut spans = reader
        .copy(user, room)?
        .map(|c| c.spans)
        .unwrap_or_default();
    if let Some(from) = current {
        if !spans.iter().any(|(_, end)| end.is_none()) {
            spans.push((from, None));
        }
    }
    let mut out = Vec::with_capacity(count.min(1024));
    // Whether the user is the room's owner or an admin now (read at the first shadowed
    // message): the staff's copies show shadowed messages, marked, as they received them.
    let mut staff: Option<bool> = None;
    for &(from, to) in spans.iter().rev() {
        let mut hi = to.unwrap_or(u64::MAX);
        if let Some(b) = before {
            hi = hi.min(b.saturating_sub(1));
        }
        if before == Some(0) {
            continue;
        }
        while out.len() < count && hi >= from {
            let want = count - out.len();
            let page = reader.messages(room, (Included(from), Included(hi)), true, want)?;
            let exhausted = page.len() < want;
            let Some(last) = page.last().map(|m| m.seq) else {
                break;
            };
            for data in page {
                let message = ChatMessage::new(data);
                let hidden = message.is_shadowed() || message.is_held_at(now);
                let is_staff = if hidden && staff.is_none() {
                    let record = reader.room(room)?;
                    *staff
                        .insert(record.is_some_and(|r| r.owner == *user || r.admins.contains(user)))
                } else {
                    staff.unwrap_or(false)
                };
                out.extend(message.seen_by(user, is_staff, now));
            }
            if exhausted || last == 0 {
                break;
            }
            hi = last - 1;
        }
    }
    Ok(out)
}

/// How long [`Core::shutdown`] waits for handlers that are still running.
pub const SHUTDOWN_HANDLER_WAIT: Duration = Duration::from_secs(1);

impl Inner {
    /// Stops the shards, timers, sessions, dispatch pool, store and runtime (the actor system
    /// must be stopping already), waiting at most `wait` for running handlers. Blocks: never
    /// called on an async worker.
    fn stop_threads(&self, wait: Duration, caller: Option<dispatch::SlotRef>) {
        self.shared.fanout.stop();
        self.shared.timers.stop();
        self.close_sessions();
        self.pool.stop(wait, caller);
        let store = self.store.lock().take();
        if let Some(store) = store {
            if let Err(e) = store.flush_blocking() {
                tracing::error!(error = %e, "final flush failed");
            }
        }
        // The callback runtime stays until the last handle is dropped: a call in flight holds
        // a timer on it (see `Core::run`).
        self.fanout_threads.join();
    }

    /// Ends every session's deliveries and releases its handlers and streams.
    fn close_sessions(&self) {
        let sessions: Vec<Arc<Session>> = self
            .shared
            .sessions
            .read()
            .iter()
            .map(|k| k.0.clone())
            .collect();
        for session in sessions {
            session.close();
        }
    }

    /// Stops everything without waiting for anything (we may be on an async worker, or on one
    /// of the engine's own threads).
    fn stop_now(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        #[cfg(feature = "cluster")]
        if let Some(node) = self.shared.node.get() {
            node.abort();
        }
        self.system.stop();
        self.shared.fanout.stop();
        self.shared.timers.stop();
        self.close_sessions();
        self.pool.stop(Duration::ZERO, None);
        // What was acknowledged but not flushed yet (a buffered store) is flushed now, before
        // the process may exit: a short wait, as a buffered writer's flush on drop. The actors
        // drop their clones of the store as the system stops; the last one closes it.
        if let Some(store) = self.store.lock().take() {
            if let Err(e) = store.flush_blocking() {
                tracing::error!(error = %e, "final flush failed");
            }
        }
    }
}

impl Core {
    /// Stops the engine at once without waiting (what dropping the application's last engine
    /// handle does): later calls get 900, handlers are released, threads end on their own.
    pub fn stop_now(&self) {
        self.inner.stop_now();
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle: stop without waiting (a no-op after shutdown), then let the callback
        // runtime go (no call can be in flight any more).
        self.stop_now();
        if let Some(rt) = self.runtime.lock().take() {
            rt.shutdown_background();
        }
    }
}

/// Compile-time checks that the handles are thread-safe.
#[allow(dead_code)]
trait AssertSendSync: Send + Sync + Clone {}
impl AssertSendSync for Core {}
