//! roomcast over WebSockets: one protocol ([`protocol`], `docs/protocol.md`), authentication
//! ([`Authenticator`]), one framework-neutral connection core ([`Gateway::serve`]), and
//! adapters for axum ([`axum`], feature `axum`) and actix-web
//! ([`actix`], feature `actix-web`) that both run that core, so they behave the
//! same.
//!
//! ```no_run
//! # #[cfg(feature = "axum")]
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use roomcast_gateway::{Gateway, GatewayConfig, TokenAuthenticator};
//!
//! let engine = roomcast::Engine::builder().build().await?;
//! let auth = TokenAuthenticator::new(b"a secret of at least thirty-two bytes!")?;
//! // Your service issues tokens after its own login; the page logs in with one.
//! let token = auth.issue("alice", Duration::from_secs(3600))?;
//! let gateway = Gateway::new(engine, auth, GatewayConfig::default());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! roomcast_gateway::axum::serve(listener, gateway).await?;
//! # Ok(()) }
//! # #[cfg(not(feature = "axum"))] fn main() {}
//! ```
//!
//! # What a connection does
//! - It gets `hello` first, then must log in within `login_timeout`, once.
//! - Every request gets one answer, in order. Pushed frames (messages, events, counts) are
//!   read from the user's bounded engine queue only when the socket can take them, so a slow
//!   reader costs a bounded amount of memory: the oldest events are dropped and the client is
//!   told how many (`missed`).
//! - Text frames above `max_frame` get an error (510) and the connection stays; frames above
//!   `transport_max_frame` close it with 1009. Binary frames get an error (110).
//! - The gateway pings every `heartbeat_interval`; a connection it hears nothing from for
//!   `idle_timeout` is closed (4008). A write that waits `write_timeout` closes it (4009).
//! - When the socket closes, the connection's client logs out and everything it held goes:
//!   there is no task per connection besides the one that serves it.

#![warn(missing_docs)]

pub mod auth;
mod connection;
pub mod protocol;

#[cfg(feature = "actix-web")]
pub mod actix;
#[cfg(feature = "axum")]
pub mod axum;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use roomcast::{Engine, RoomId, UserId};

pub use auth::{AuthError, AuthFuture, Authenticator, Credentials};
pub use auth::{InsecureAuthenticator, TokenAuthenticator};
pub use connection::{Incoming, Outgoing, TransportClosed};

/// The chat page served at `/`: plain HTML, CSS and JS, no build step.
pub const PAGE_HTML: &str = include_str!("page/index.html");
/// The page's script, served at `/app.js`.
pub const PAGE_JS: &str = include_str!("page/app.js");
/// The page's style sheet, served at `/style.css`.
pub const PAGE_CSS: &str = include_str!("page/style.css");

/// How a gateway treats its connections. Every field has a `with_` setter.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct GatewayConfig {
    /// Text frames above this many bytes get an error (510); default 64 KiB.
    pub max_frame: usize,
    /// Frames above this many bytes close the connection (1009); default 1 MiB (at least
    /// `max_frame`).
    pub transport_max_frame: usize,
    /// The gateway pings this often; default 20 s.
    pub heartbeat_interval: Duration,
    /// A connection heard from for this long is closed (4008); default 60 s.
    pub idle_timeout: Duration,
    /// A connection not logged in this long after opening is closed (4002); default 10 s.
    pub login_timeout: Duration,
    /// A write that waits this long closes the connection (4009); default 10 s.
    pub write_timeout: Duration,
    /// Connections at once, in all (above: 1013); default 100,000.
    pub max_connections: usize,
    /// Connections at once per user (above: 4029); default 8.
    pub max_connections_per_user: usize,
    /// Messages sent as history when a room is joined without `since`; default 20 (at most
    /// 200).
    pub history_on_join: u32,
    /// How often member counts of joined rooms are pushed when they changed; default 2 s.
    pub count_interval: Duration,
}

impl Default for GatewayConfig {
    fn default() -> GatewayConfig {
        GatewayConfig {
            max_frame: 64 * 1024,
            transport_max_frame: 1024 * 1024,
            heartbeat_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            login_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            max_connections: 100_000,
            max_connections_per_user: 8,
            history_on_join: 20,
            count_interval: Duration::from_secs(2),
        }
    }
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $field:ident: $ty:ty;)*) => {
        impl GatewayConfig {
            $($(#[$doc])* pub fn $name(mut self, value: $ty) -> GatewayConfig {
                self.$field = value;
                self
            })*
        }
    };
}

setters! {
    /// Sets [`GatewayConfig::max_frame`].
    with_max_frame: max_frame: usize;
    /// Sets [`GatewayConfig::transport_max_frame`].
    with_transport_max_frame: transport_max_frame: usize;
    /// Sets [`GatewayConfig::heartbeat_interval`].
    with_heartbeat_interval: heartbeat_interval: Duration;
    /// Sets [`GatewayConfig::idle_timeout`].
    with_idle_timeout: idle_timeout: Duration;
    /// Sets [`GatewayConfig::login_timeout`].
    with_login_timeout: login_timeout: Duration;
    /// Sets [`GatewayConfig::write_timeout`].
    with_write_timeout: write_timeout: Duration;
    /// Sets [`GatewayConfig::max_connections`].
    with_max_connections: max_connections: usize;
    /// Sets [`GatewayConfig::max_connections_per_user`].
    with_max_connections_per_user: max_connections_per_user: usize;
    /// Sets [`GatewayConfig::history_on_join`].
    with_history_on_join: history_on_join: u32;
    /// Sets [`GatewayConfig::count_interval`].
    with_count_interval: count_interval: Duration;
}

impl GatewayConfig {
    /// The transport's frame limit: `transport_max_frame`, at least `max_frame`.
    pub fn transport_limit(&self) -> usize {
        self.transport_max_frame.max(self.max_frame)
    }
}

/// A room's member count, shared by the gateway's connections (one lookup per room per
/// `count_interval`, however many connections are in it).
struct CountEntry {
    members: u32,
    fetched: Instant,
    refreshing: bool,
}

pub(crate) struct Inner {
    pub(crate) engine: Engine,
    pub(crate) auth: Box<dyn Authenticator>,
    pub(crate) config: GatewayConfig,
    total: AtomicUsize,
    per_user: Mutex<HashMap<UserId, usize>>,
    counts: Mutex<HashMap<RoomId, CountEntry>>,
    pub(crate) shutdown: tokio::sync::watch::Sender<bool>,
}

/// A WebSocket gateway onto one engine: shared by every connection, `Send + Sync + Clone`.
///
/// Adapters ([`axum`], [`actix`]) upgrade requests and hand each
/// socket to [`Gateway::serve`]; another framework can do the same through [`Incoming`] and
/// [`Outgoing`].
#[derive(Clone)]
pub struct Gateway {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("connections", &self.connections())
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// A gateway onto `engine` whose logins `authenticator` checks.
    pub fn new(
        engine: Engine,
        authenticator: impl Authenticator,
        config: GatewayConfig,
    ) -> Gateway {
        Gateway {
            inner: Arc::new(Inner {
                engine,
                auth: Box::new(authenticator),
                config,
                total: AtomicUsize::new(0),
                per_user: Mutex::new(HashMap::new()),
                counts: Mutex::new(HashMap::new()),
                shutdown: tokio::sync::watch::channel(false).0,
            }),
        }
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The configuration.
    pub fn config(&self) -> &GatewayConfig {
        &self.inner.config
    }

    /// Connections being served now.
    pub fn connections(&self) -> usize {
        self.inner.total.load(Ordering::SeqCst)
    }

    /// Connections of `user` being served now.
    pub fn connections_of(&self, user: &str) -> usize {
        UserId::new(user)
            .ok()
            .and_then(|u| self.inner.per_user.lock().get(&u).copied())
            .unwrap_or(0)
    }

    /// Closes every connection (1001) and refuses new ones. The engine keeps running.
    pub fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }

    /// True once [`Gateway::shutdown`] was called.
    pub fn is_shut_down(&self) -> bool {
        *self.inner.shutdown.borrow()
    }

    /// Serves one WebSocket until it closes: `incoming` yields what the client sent, `outgoing`
    /// writes to it. Returns the close code it ended with. This is the whole connection: the
    /// adapters only translate frames.
    pub async fn serve<I, O>(&self, incoming: I, outgoing: O) -> u16
    where
        I: futures_core::Stream<Item = Incoming> + Unpin,
        O: Outgoing,
    {
        connection::serve(self.clone(), incoming, outgoing).await
    }

    /// Takes a connection slot, or None at `max_connections`.
    pub(crate) fn open_slot(&self) -> Option<Slot> {
        let max = self.inner.config.max_connections;
        let taken = self
            .inner
            .total
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            });
        taken.ok().map(|_| Slot {
            gateway: self.clone(),
            user: None,
        })
    }

    /// A member count for `room`, fetched at most once per `count_interval` by whichever
    /// connection asks first.
    pub(crate) async fn member_count(&self, room: RoomId) -> Option<u32> {
        let interval = self.inner.config.count_interval;
        {
            let mut counts = self.inner.counts.lock();
            let now = Instant::now();
            if counts.len() > 10_000 {
                counts.retain(|_, e| now.duration_since(e.fetched) < interval * 30);
            }
            match counts.get_mut(&room) {
                Some(e) if e.refreshing || now.duration_since(e.fetched) < interval => {
                    return Some(e.members)
                }
                Some(e) => e.refreshing = true,
                None => {
                    counts.insert(
                        room,
                        CountEntry {
                            members: 0,
                            fetched: now,
                            refreshing: true,
                        },
                    );
                }
            }
        }
        let stats = self.inner.engine.room_stats(&room).await;
        let mut counts = self.inner.counts.lock();
        match stats {
            Ok(s) => {
                let members = u32::try_from(s.member_count).unwrap_or(u32::MAX);
                counts.insert(
                    room,
                    CountEntry {
                        members,
                        fetched: Instant::now(),
                        refreshing: false,
                    },
                );
                Some(members)
            }
            Err(_) => {
                counts.remove(&room);
                None
            }
        }
    }
}

/// A connection's place in the gateway's counts, released when dropped.
pub(crate) struct Slot {
    gateway: Gateway,
    user: Option<UserId>,
}

impl Slot {
    /// Counts this connection for `user`, or false at `max_connections_per_user`.
    pub(crate) fn claim_user(&mut self, user: &UserId) -> bool {
        let max = self.gateway.inner.config.max_connections_per_user;
        let mut per_user = self.gateway.inner.per_user.lock();
        let n = per_user.entry(user.clone()).or_insert(0);
        if *n >= max {
            if *n == 0 {
                per_user.remove(user);
            }
            return false;
        }
        *n += 1;
        self.user = Some(user.clone());
        true
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(user) = self.user.take() {
            let mut per_user = self.gateway.inner.per_user.lock();
            if let Some(n) = per_user.get_mut(&user) {
                *n -= 1;
                if *n == 0 {
                    per_user.remove(&user);
                }
            }
        }
        self.gateway.inner.total.fetch_sub(1, Ordering::SeqCst);
    }
}
